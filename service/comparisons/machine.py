"""The worker's side of a comparison: the step that moves it from phase to phase (:class:`ComparisonPhase`).

1. **tune** — submitting creates one QUEUED study per arm × batch size × tuning repeat
   (:func:`search_spaces.comparison.expand`, role ``tune``); any worker runs them, so several workers share the work.
2. **extend** — once every tuning study SUCCEEDED, and again once each round of extensions did, :func:`advance`
   runs the range check (:func:`.reruns.check_ranges`); with ``range_check.mode: extend`` and an optimum on a
   range's edge at some batch size, every arm × repeat at that batch size gets an extension study (role
   ``extend``) with a tuning study's budget, up to ``range_check.max_extensions`` rounds.
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

import sqlalchemy as sa
from sqlalchemy.orm import Session

from search_spaces.comparison import ComparisonSpec

from .. import crud
from ..core.db import session_scope
from ..core.jsondata import jsonable
from ..models import ComparisonPhase, ComparisonRecord, StudyState, utcnow
from .assembly import build_result
from .records import TUNING_ROLES, studies_of
from .reruns import check_ranges, queue_reruns

__all__ = ["advance", "advance_all"]

log = logging.getLogger(__name__)


def advance_all(url: str) -> int:
    """Move every live comparison one step if it can; returns how many changed. Called by workers between studies."""
    with session_scope(url) as s:
        ids = list(
            s.scalars(
                sa.select(ComparisonRecord.id).where(
                    ComparisonRecord.state.in_((StudyState.QUEUED.value, StudyState.RUNNING.value))
                )
            )
        )
    changed = 0
    for comparison_id in ids:
        with session_scope(url) as s:
            changed += advance(session=s, comparison_id=comparison_id, storage_url=url)
    return changed


def advance(*, session: Session, comparison_id: str, storage_url: str) -> bool:
    """One step of a comparison (under its row lock, so two workers never both step it). Returns whether it moved."""
    record = session.scalars(
        sa.select(ComparisonRecord).where(ComparisonRecord.id == comparison_id).with_for_update(skip_locked=True)
    ).one_or_none()
    if record is None or StudyState(record.state).is_finished:
        return False
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
    if record.phase in (ComparisonPhase.TUNE, ComparisonPhase.EXTEND):
        record.state = StudyState.RUNNING.value
        # the range check after tuning and after each round of extensions (up to range_check.max_extensions)
        if check_ranges(session, record, spec, [s for s in studies if s.role in TUNING_ROLES], storage_url):
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
