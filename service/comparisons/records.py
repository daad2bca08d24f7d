"""A comparison's records: submit (idempotently, as a study), list, read, cancel, resume, and its studies.

A comparison is ordinary studies linked to one :class:`ComparisonRecord`. Each study record says where it belongs:
``arm``, ``batch_size``, ``role`` (the :class:`ComparisonPhase` it was created for: ``tune``, ``extend``,
``rerun``), ``repeat`` (the 0-based tuning repeat: ``repeats_min`` of them at submission, one more per round while
a verdict is undecided, up to ``repeats_max``) and, for a re-run, ``rank`` (which of its repeat's top-k configs).
``epochs_spent`` is kept up to date by the worker as trials end. How a comparison moves from phase to phase, in
rounds, is :mod:`.machine`.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session

from search_spaces.comparison import Arm, ComparisonSpec, expand
from search_spaces.spec import StudySpec

from .. import crud
from ..errors import ConflictError, NotFoundError
from ..models import ComparisonPhase, ComparisonRecord, StudyRecord, StudyState, utcnow

__all__ = [
    "TUNING_ROLES",
    "add_study",
    "arm_studies",
    "cancel_comparison",
    "comparison_version",
    "create_comparison",
    "get_comparisons",
    "list_comparison_versions",
    "resume_comparison",
    "studies_of",
]


#: The roles whose studies tune an arm (a tuning study and its range-check extensions): their trials and spending.
TUNING_ROLES = frozenset((ComparisonPhase.TUNE, ComparisonPhase.EXTEND))


def create_comparison(
    *, session: Session, spec: ComparisonSpec, idempotency_key: str | None = None, owner: str | None = None
) -> tuple[ComparisonRecord, bool]:
    """A new QUEUED comparison and the QUEUED tuning studies of its first round (``repeats_min`` repeats), or the
    existing one for a replayed request."""
    record, created = crud.create_submitted(
        session=session,
        model=ComparisonRecord,
        spec=spec,
        idempotency_key=idempotency_key,
        owner=owner,
        phase=ComparisonPhase.TUNE.value,
    )
    if created:
        crud.refuse_prefix_in_use(session=session, comparison=record)
        for arm_study in expand(spec):
            spec_ = StudySpec.model_validate(arm_study.spec)
            add_study(
                session, record, spec_, arm_study.arm.name, arm_study.batch_size, ComparisonPhase.TUNE, arm_study.repeat
            )
    return record, created


def add_study(
    session: Session,
    comparison: ComparisonRecord,
    spec: StudySpec,
    arm: str,
    bs: int,
    role: ComparisonPhase,
    repeat: int,
    rank: int | None = None,
) -> StudyRecord:
    """A new QUEUED study of the comparison, in its place (arm, batch size, role, repeat, re-run rank)."""
    study, _ = crud.create_study(session=session, spec=spec, owner=comparison.owner, of_comparison=True)
    study.comparison_id, study.arm, study.batch_size, study.role = comparison.id, arm, bs, ComparisonPhase(role).value
    study.repeat, study.rank = repeat, rank
    session.flush()
    return study


def studies_of(session: Session, comparison_id: str) -> list[StudyRecord]:
    """The comparison's studies in creation order (tuning studies first, arms outer, batch sizes inner)."""
    return list(
        session.scalars(
            sa.select(StudyRecord)
            .where(StudyRecord.comparison_id == comparison_id)
            .order_by(StudyRecord.created_at, StudyRecord.name)
        ).all()
    )


def arm_studies(spec: ComparisonSpec, studies: list[StudyRecord]) -> Iterator[tuple[Arm, int, list[StudyRecord]]]:
    """Each arm × batch size of the spec (arms outer) with its studies, in ``studies``' order."""
    for arm in spec.arms:
        for bs in spec.batch_sizes:
            yield arm, bs, [s for s in studies if s.arm == arm.name and s.batch_size == bs]


def _versions():
    """A comparison's version, what a cached read is keyed by: its row's (``updated_at`` moves on every write to it)
    and its studies' (how many, and the latest ``updated_at``: a study's state and ``epochs_spent`` show in it)."""
    studies = (
        sa.select(
            StudyRecord.comparison_id,
            sa.func.count().label("n"),
            sa.func.max(StudyRecord.updated_at).label("latest"),
        )
        .where(StudyRecord.comparison_id.is_not(None))
        .group_by(StudyRecord.comparison_id)
        .subquery()
    )
    return sa.select(
        ComparisonRecord.id, ComparisonRecord.updated_at, ComparisonRecord.state, studies.c.n, studies.c.latest
    ).outerjoin(studies, studies.c.comparison_id == ComparisonRecord.id)


def comparison_version(*, session: Session, comparison_id: str) -> tuple:
    """The comparison's version (see :func:`_versions`), or NotFoundError."""
    row = session.execute(_versions().where(ComparisonRecord.id == comparison_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"{ComparisonRecord.kind} not found")
    return tuple(row)


def list_comparison_versions(*, session: Session, limit: int, offset: int) -> tuple[int, tuple[tuple, ...]]:
    """``(total, page)`` of comparisons, newest first, each as its version; :func:`get_comparisons` loads them."""
    total = session.scalar(sa.select(sa.func.count()).select_from(ComparisonRecord)) or 0
    rows = session.execute(_versions().order_by(ComparisonRecord.created_at.desc()).limit(limit).offset(offset)).all()
    return total, tuple(tuple(r) for r in rows)


def get_comparisons(*, session: Session, comparison_ids: list[str]) -> list[ComparisonRecord]:
    """The comparisons of ``comparison_ids`` that exist, in that order."""
    found = {
        r.id: r for r in session.scalars(sa.select(ComparisonRecord).where(ComparisonRecord.id.in_(comparison_ids)))
    }
    return [found[i] for i in comparison_ids if i in found]


def cancel_comparison(*, session: Session, comparison_id: str) -> ComparisonRecord:
    """QUEUED or RUNNING → CANCELLED now; its queued studies are cancelled, its running ones asked to stop."""
    record = ComparisonRecord.find_or_raise_by_id(session, comparison_id, for_update=True)
    if StudyState(record.state).is_finished:
        raise ConflictError(f"Comparison is {record.state}; only a QUEUED or RUNNING comparison can be cancelled")
    for study in studies_of(session, record.id):
        if study.state in (StudyState.QUEUED, StudyState.RUNNING):
            crud.cancel_if_live(session=session, study_id=study.id)
    record.state = StudyState.CANCELLED.value
    record.finished_at = utcnow()
    return record


def resume_comparison(*, session: Session, comparison_id: str) -> ComparisonRecord:
    """A CANCELLED or FAILED comparison carries on: every study that did not succeed is queued again."""
    record = ComparisonRecord.find_or_raise_by_id(session, comparison_id, for_update=True)
    if record.state not in (StudyState.CANCELLED, StudyState.FAILED):
        raise ConflictError(f"Comparison is {record.state}; only a CANCELLED or FAILED one can be resumed")
    for study in studies_of(session, record.id):
        if study.state in (StudyState.CANCELLED, StudyState.FAILED):
            crud.resume_study(session=session, study_id=study.id)
        elif study.state == StudyState.RUNNING:
            study.cancel_requested = False  # a cancel its worker has not acted on yet: let it run on
    running = record.phase != ComparisonPhase.TUNE
    record.state = StudyState.RUNNING.value if running else StudyState.QUEUED.value
    record.error = None
    record.finished_at = None
    return record
