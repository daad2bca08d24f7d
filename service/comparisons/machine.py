"""The worker's side of a comparison: the step that moves it from phase to phase (:class:`ComparisonPhase`).

1. **tune** — submitting creates one QUEUED study per arm × batch size × tuning repeat
   (:func:`search_spaces.comparison.expand`, role ``tune``); any worker runs them, so several workers share the work.
2. **extend** — once every tuning study SUCCEEDED, :func:`advance` runs the range check
   (:func:`.reruns.check_ranges`); with ``range_check: extend`` and an optimum on a range's edge at some batch size,
   every arm × repeat at that batch size gets an extension study (role ``extend``) with the same extra budget.
3. **rerun** — once tuning (and extensions) SUCCEEDED, :func:`advance` queues the re-runs of each repeat's top-k
   configs on fresh seeds (:func:`.reruns.queue_reruns`).
4. **done** — once every re-run study SUCCEEDED, :func:`.assembly.build_result` reads the stored trials (no
   re-training) into a :class:`.result.ComparisonResult`, stored as JSON with the comparison, which is then SUCCEEDED.

A study that FAILED or was CANCELLED fails the comparison with its name; a resume queues every unfinished study
again and the comparison carries on from its phase.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from search_spaces.comparison import ComparisonSpec

from .. import crud
from ..core.db import session_scope
from ..core.jsondata import jsonable
from ..models import ComparisonPhase, ComparisonRecord, StudyState, utcnow
from .assembly import build_result
from .records import studies_of
from .reruns import check_ranges, queue_reruns

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
    current = [s for s in studies if s.role == record.phase]
    moved = False
    if record.state == StudyState.QUEUED and any(s.state != StudyState.QUEUED for s in studies):
        record.state, moved = StudyState.RUNNING.value, True
    broken = [s for s in current if s.state in (StudyState.FAILED, StudyState.CANCELLED)]
    if broken:
        record.state = StudyState.FAILED.value
        record.error = "; ".join(f"study {s.name} {s.state}" + (f": {s.error}" if s.error else "") for s in broken)
        record.finished_at = utcnow()
        for study in studies:  # the rest cannot make the comparison whole: stop them (a resume queues them again)
            if study.state in (StudyState.QUEUED, StudyState.RUNNING):
                crud.cancel_study(session=session, study_id=study.id)
        return True
    if not current or any(s.state != StudyState.SUCCEEDED for s in current):
        return moved
    spec = ComparisonSpec.model_validate(record.spec)
    if record.phase == ComparisonPhase.TUNE:
        record.state = StudyState.RUNNING.value
        if check_ranges(session, record, spec, current, storage_url):
            record.phase = ComparisonPhase.EXTEND.value
            log.info("comparison %s: tuning done, range-check extensions queued", record.name)
            return True
    if record.phase in (ComparisonPhase.TUNE, ComparisonPhase.EXTEND):
        queue_reruns(session, record, spec, studies, storage_url)
        record.phase = ComparisonPhase.RERUN.value
        log.info("comparison %s: tuning done, re-runs queued", record.name)
        return True
    try:
        result = build_result(storage_url, spec, studies)
    except Exception as e:  # the comparison fails with the reason; the worker lives on
        log.exception("comparison %s: building the result failed", record.name)
        record.state, record.error = StudyState.FAILED.value, f"building the result: {type(e).__name__}: {e}"
    else:
        record.result = jsonable(asdict(result))
        record.state, record.phase = StudyState.SUCCEEDED.value, ComparisonPhase.DONE.value
    record.finished_at = utcnow()
    log.info("comparison %s: %s", record.name, record.state)
    return True
