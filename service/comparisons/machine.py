"""The worker's side of a comparison: the step that moves it from phase to phase (:class:`ComparisonPhase`), in
rounds of tuning repeats (R4 of :mod:`search_spaces.comparison`).

A **round** is one or more tuning repeats of every arm at every batch size still open: the first round is repeats
``0 … repeats_min − 1``, every later one a single repeat more. Within a round each batch size goes through steps
1–3 on its own, as soon as its own studies end (a batch size that tunes fast is re-run while a slow one still
tunes, so workers are not left idle at the end of a step); every arm at a batch size always moves together, and the
look (4) waits for every batch size of the round:

1. **tune** — one QUEUED study per arm × batch size × repeat of the round (:func:`search_spaces.comparison.expand`,
   role ``tune``); any worker runs them, so several workers share the work.
2. **extend** — once a batch size's tuning studies SUCCEEDED, and again once each of its rounds of extensions did,
   :func:`advance` runs the range check on them (:func:`.reruns.check_ranges`); with ``range_check.mode: extend``
   and an optimum on a range's edge, every arm × repeat of the round at that batch size gets an extension study
   (role ``extend``) with a tuning study's budget, up to ``range_check.max_extensions`` times.
3. **rerun** — once a batch size's tuning (and extensions) SUCCEEDED, :func:`advance` queues the re-runs of each of
   its repeats' top-k configs on fresh seeds (:func:`.reruns.queue_reruns`).

The comparison's ``phase`` is that of its least advanced batch size.

4. **look** — once every re-run study SUCCEEDED, :func:`.assembly.build_result` reads the stored trials (no
   re-training) into a :class:`.result.ComparisonResult` and recomputes the verdicts
   (:meth:`~.result.ComparisonResult.verdicts`). A batch size with an ``undecided`` verdict and fewer than
   ``repeats_max`` repeats gets the next round (back to **tune**, every arm together, so spending stays equal across
   arms); the others stop. When no batch size is open the result is stored with the comparison (phase **done**,
   SUCCEEDED); what is still undecided at ``repeats_max`` stays ``undecided``.

The looks are not stored apart: every verdict's looks are recomputed from the stored scores by the same rule, so
the result records each look (``Difference.looks``) and the machine and the result cannot disagree.

A study that FAILED or was CANCELLED fails the comparison with its name; a resume queues every unfinished study
again and the comparison carries on from its phase.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from search_spaces.comparison import ComparisonSpec, expand
from search_spaces.spec import StudySpec

from .. import crud
from ..core.db import session_scope
from ..core.jsondata import jsonable
from ..models import ComparisonPhase, ComparisonRecord, StudyRecord, StudyState, utcnow
from .assembly import build_result
from .records import TUNING_ROLES, add_study, studies_of
from .reruns import check_ranges, queue_reruns
from .result import ComparisonResult

__all__ = ["advance", "advance_all"]

log = logging.getLogger(__name__)


#: The longest back-off between two attempts to advance a comparison that keeps failing.
MAX_RETRY_S = 300.0


def advance_all(url: str, *, max_failures: int = 5, retry_s: float = 2.0) -> int:
    """Move every live comparison one step if it can; returns how many changed. Called by workers between studies.

    Each comparison is advanced on its own: one that raises is logged and retried later (back-off from ``retry_s``,
    doubling), never delaying the others; after ``max_failures`` failures in a row it ends FAILED with the error.
    """
    now = utcnow()
    with session_scope(url) as s:
        ids = list(
            s.scalars(
                sa.select(ComparisonRecord.id).where(
                    ComparisonRecord.state.in_((StudyState.QUEUED.value, StudyState.RUNNING.value)),
                    sa.or_(ComparisonRecord.retry_at.is_(None), ComparisonRecord.retry_at <= now),
                )
            )
        )
    changed = 0
    for comparison_id in ids:
        try:
            with session_scope(url) as s:
                changed += advance(session=s, comparison_id=comparison_id, storage_url=url)
        except Exception as e:  # this comparison's trouble: the others advance all the same
            log.warning("advancing comparison %s failed", comparison_id, exc_info=True)
            changed += _record_failure(url, comparison_id, e, max_failures=max_failures, retry_s=retry_s)
    return changed


def _record_failure(url: str, comparison_id: str, error: Exception, *, max_failures: int, retry_s: float) -> bool:
    """Count a failed attempt on the comparison's row and set its back-off; the last allowed one ends it FAILED.
    Returns whether it ended. (A database outage is no fault of the comparison's: not counted.)"""
    from .._optuna import is_outage

    if is_outage(error):
        return False
    try:
        with session_scope(url) as s:
            record = s.get(ComparisonRecord, comparison_id, with_for_update=True)
            if record is None or StudyState(record.state).is_finished:
                return False
            record.advance_failures += 1
            delay = min(MAX_RETRY_S, retry_s * 2 ** (record.advance_failures - 1))
            record.retry_at = utcnow() + timedelta(seconds=delay)
            if record.advance_failures < max_failures:
                return False
            record.state = StudyState.FAILED.value
            record.error = (
                f"advancing the comparison failed {record.advance_failures} times; "
                f"last: {type(error).__name__}: {error}"
            )
            record.finished_at = utcnow()
            log.error("comparison %s: %s", record.name, record.error)
            return True
    except Exception:  # bookkeeping of a failure: the next pass tries again
        log.warning("could not record comparison %s's failure", comparison_id, exc_info=True)
        return False


def advance(*, session: Session, comparison_id: str, storage_url: str) -> bool:
    """One step of a comparison (under its row lock, so two workers never both step it). Returns whether it moved."""
    record = session.scalars(
        sa.select(ComparisonRecord).where(ComparisonRecord.id == comparison_id).with_for_update(skip_locked=True)
    ).one_or_none()
    if record is None or StudyState(record.state).is_finished:
        return False
    record.advance_failures, record.retry_at = 0, None  # (kept only if this step fails: the caller counts it)
    studies = studies_of(session, record.id)
    moved = False
    if record.state == StudyState.QUEUED and any(s.state != StudyState.QUEUED for s in studies):
        record.state, moved = StudyState.RUNNING.value, True
    broken = [s for s in studies if s.state in (StudyState.FAILED, StudyState.CANCELLED)]
    if broken:
        record.state = StudyState.FAILED.value
        record.error = "; ".join(f"study {s.name} {s.state}" + (f": {s.error}" if s.error else "") for s in broken)
        record.finished_at = utcnow()
        for study in studies:  # the rest cannot make the comparison whole: stop them (a resume queues them again)
            if study.state in (StudyState.QUEUED, StudyState.RUNNING):
                crud.cancel_if_live(session=session, study_id=study.id)
        return True
    spec = ComparisonSpec.model_validate(record.spec)
    tuning = _this_round(studies)
    if tuning:  # some batch size is still tuning (or extending): each moves on as soon as its own studies end
        for bs, mine in _by_batch_size(tuning).items():
            if any(s.state != StudyState.SUCCEEDED for s in mine):
                continue
            record.state, moved = StudyState.RUNNING.value, True
            # the range check after the batch size's tuning and after each of its rounds of extensions (R9)
            if check_ranges(session, record, spec, mine, storage_url):
                log.info("comparison %s: batch %s tuned, range-check extensions queued", record.name, bs)
            else:
                queue_reruns(session, record, spec, mine, storage_url)
                log.info("comparison %s: batch %s tuned, re-runs queued", record.name, bs)
        if moved:
            record.phase = _phase(studies_of(session, record.id)).value
        return moved
    if any(s.state != StudyState.SUCCEEDED for s in studies):
        return moved
    try:
        result = build_result(storage_url, spec, studies)
        opened = _open_batch_sizes(spec, studies, result)
    except Exception as e:  # the comparison fails with the reason; the worker lives on
        log.exception("comparison %s: building the result failed", record.name)
        record.state, record.error = StudyState.FAILED.value, f"building the result: {type(e).__name__}: {e}"
    else:
        if opened:
            _queue_round(session, record, spec, studies, opened)
            record.phase = ComparisonPhase.TUNE.value
            log.info("comparison %s: look done, next round at batch sizes %s", record.name, opened)
            return True
        record.result = jsonable(asdict(result))
        record.state, record.phase = StudyState.SUCCEEDED.value, ComparisonPhase.DONE.value
    record.finished_at = utcnow()
    log.info("comparison %s: %s", record.name, record.state)
    return True


def _this_round(studies: list[StudyRecord]) -> list[StudyRecord]:
    """The tuning and extension studies of the round in progress: those whose arm × batch size × repeat has no
    re-run study yet (earlier rounds' have theirs)."""
    rerun = {(s.arm, s.batch_size, s.repeat) for s in studies if s.role == ComparisonPhase.RERUN}
    return [s for s in studies if s.role in TUNING_ROLES and (s.arm, s.batch_size, s.repeat) not in rerun]


def _by_batch_size(studies: list[StudyRecord]) -> dict[int, list[StudyRecord]]:
    groups: dict[int, list[StudyRecord]] = {}
    for study in studies:
        groups.setdefault(study.batch_size or 0, []).append(study)
    return groups


def _phase(studies: list[StudyRecord]) -> ComparisonPhase:
    """The round's phase: that of its least advanced batch size (``tune`` while one has no extension or re-run
    yet, ``extend`` while one is extending, else ``rerun``)."""
    tuning = _by_batch_size(_this_round(studies))
    if any(all(s.role == ComparisonPhase.TUNE for s in mine) for mine in tuning.values()):
        return ComparisonPhase.TUNE
    return ComparisonPhase.EXTEND if tuning else ComparisonPhase.RERUN


def _repeats_run(studies: list[StudyRecord], batch_size: int) -> int:
    """How many tuning repeats a batch size has had (rounds add them in order, from 0)."""
    return len({s.repeat for s in studies if s.role == ComparisonPhase.TUNE and s.batch_size == batch_size})


def _open_batch_sizes(spec: ComparisonSpec, studies: list[StudyRecord], result: ComparisonResult) -> list[int]:
    """The look (R4): the batch sizes where a verdict is still ``undecided`` below ``repeats_max`` repeats (empty:
    the comparison is done)."""
    return [bs for bs in spec.batch_sizes if _repeats_run(studies, bs) < spec.repeats_max and result.still_open(bs)]


def _queue_round(
    session: Session, record: ComparisonRecord, spec: ComparisonSpec, studies: list[StudyRecord], opened: list[int]
) -> None:
    """One more tuning repeat of every arm at each opened batch size: QUEUED tuning studies (all arms together, so
    spending stays equal across arms)."""
    for bs in opened:
        n = _repeats_run(studies, bs)
        for arm_study in expand(spec, range(n, n + 1), [bs]):
            study_spec = StudySpec.model_validate(arm_study.spec)
            add_study(session, record, study_spec, arm_study.arm.name, bs, ComparisonPhase.TUNE, arm_study.repeat)
