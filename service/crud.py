"""Study-record operations: create (idempotently), read, cancel, resume, and the worker's claim/heartbeat/finish.

Every function takes the session as a keyword (``*, session``) and leaves committing to the caller's
:func:`service.core.db.session_scope`. Finders that must find something raise :class:`NotFoundError` (a 404).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from search_spaces.comparison import ComparisonSpec
from search_spaces.spec import StudySpec

from .errors import ConflictError, InvalidSpecError, NotFoundError
from .models import ComparisonRecord, SecretRecord, StudyRecord, StudyState, WorkerRecord, utcnow

__all__ = [
    "cancel_if_live",
    "cancel_study",
    "claim_next_study",
    "create_study",
    "comparison_reserving",
    "create_submitted",
    "end_requested_cancels",
    "find_replay",
    "finish_study",
    "get_studies",
    "get_study_version",
    "get_study",
    "Beat",
    "has_claimable",
    "heartbeat",
    "list_study_versions",
    "refuse_prefix_in_use",
    "refuse_reserved_name",
    "live_workers",
    "notify_queued",
    "owner_salt",
    "resume_study",
    "spec_hash",
    "study_size",
]


#: The name of the owner ids' salt in ``tvlars_secrets``.
OWNER_SALT = "owner_salt"


def owner_salt(*, session: Session) -> str:
    """The salt of the ``owner`` ids (:func:`service.core.config.owner_id`), made at random on first use and kept
    in the database, so every API process and every restart agree. Two processes making it at once: one commit
    fails (ConflictError) and that caller reads the other's on a retry."""
    record = session.get(SecretRecord, OWNER_SALT)
    if record is None:
        record = SecretRecord(name=OWNER_SALT, value=secrets.token_hex(32))
        session.add(record)
    return record.value


def spec_hash(canonical: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


Submitted = TypeVar("Submitted", StudyRecord, ComparisonRecord)


def find_replay(
    *, session: Session, model: type[Submitted], name: str, digest: str, key: str | None
) -> Submitted | None:
    """The record a replayed submit names (same ``Idempotency-Key``, same spec), or None for a new submit.

    ConflictError for the key reused with another spec, or for the name taken (by a request without this key).
    """
    if key is not None:
        existing = model.find_by_idempotency_key(session, key)
        if existing is not None:
            if existing.spec_hash != digest:
                raise ConflictError("Idempotency-Key was already used with a different spec")
            return existing
    if model.find_by_name(session, name) is not None:
        raise ConflictError(f"A {model.kind.lower()} named {name!r} exists; choose another name")
    return None


def create_submitted(
    *,
    session: Session,
    model: type[Submitted],
    spec: StudySpec | ComparisonSpec,
    idempotency_key: str | None = None,
    owner: str | None = None,
    **fields: Any,
) -> tuple[Submitted, bool]:
    """A new QUEUED study or comparison (``model``) for ``spec`` with the given extra column ``fields``, or the
    existing one for a replayed request (see :func:`find_replay`). Returns ``(record, created)``."""
    canonical = spec.canonical()
    digest = spec_hash(canonical)
    existing = find_replay(session=session, model=model, name=spec.name, digest=digest, key=idempotency_key)
    if existing is not None:
        return existing, False
    record = model(
        id=uuid.uuid4().hex,
        name=spec.name,
        spec=canonical,
        spec_hash=digest,
        state=StudyState.QUEUED.value,
        idempotency_key=idempotency_key,
        owner=owner,
        **fields,
    )
    session.add(record)
    session.flush()  # a concurrent insert of the same name or key fails here, inside the caller's transaction
    if model is StudyRecord:
        notify_queued(session)
    return record, True


def comparison_reserving(*, session: Session, name: str) -> str | None:
    """The comparison whose studies' names ``name`` falls under (``COMPARISON-…``), if any.

    A comparison's derived studies (tuning, extension and re-run studies, some made only when an earlier phase
    ends) are all named ``{comparison}-…``: that prefix is the comparison's, so no other study can take a name the
    comparison will need later.
    """
    prefixes = [name[:i] for i, c in enumerate(name) if c == "-" and i > 0]
    if not prefixes:
        return None
    return session.scalar(sa.select(ComparisonRecord.name).where(ComparisonRecord.name.in_(prefixes)).limit(1))


def refuse_reserved_name(*, session: Session, name: str) -> None:
    """ConflictError if ``name`` falls under a comparison's prefix (see :func:`comparison_reserving`)."""
    owner = comparison_reserving(session=session, name=name)
    if owner is not None:
        raise ConflictError(
            f"The name {name!r} is reserved for comparison {owner!r} (its studies are named {owner + '-'!r}…); "
            "choose another name"
        )


def refuse_prefix_in_use(*, session: Session, comparison: ComparisonRecord) -> None:
    """ConflictError if a study or comparison outside this new comparison is named under its prefix, or its own
    name falls under another comparison's prefix: its future studies' names must be free."""
    refuse_reserved_name(session=session, name=comparison.name)
    prefix = f"{comparison.name}-"
    for model in (StudyRecord, ComparisonRecord):
        taken = session.scalar(
            sa.select(model.name)
            .where(model.name.startswith(prefix, autoescape=True), model.id != comparison.id)
            .where(*([StudyRecord.comparison_id.is_distinct_from(comparison.id)] if model is StudyRecord else []))
            .limit(1)
        )
        if taken is not None:
            raise ConflictError(
                f"A {model.kind.lower()} named {taken!r} exists under this comparison's prefix {prefix!r} (the "
                "comparison's own studies are named so); choose another name"
            )


#: The PostgreSQL channel a study going into the queue is announced on (``LISTEN`` by idle workers).
QUEUE_CHANNEL = "tvlars_study_queued"


def notify_queued(session: Session) -> None:
    """Wake idle workers: a study is (back) in the queue. On PostgreSQL a ``NOTIFY``, sent when the caller's
    transaction commits; other databases have no such thing (their workers poll briefly)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(f"NOTIFY {QUEUE_CHANNEL}"))


def create_study(
    *,
    session: Session,
    spec: StudySpec,
    idempotency_key: str | None = None,
    owner: str | None = None,
    of_comparison: bool = False,
) -> tuple[StudyRecord, bool]:
    """A new QUEUED study, or the existing one for a replayed request. Returns ``(record, created)``.

    Same idempotency key and same spec: the existing study (created False). Same key, other spec: ConflictError.
    A name already taken (by a request without this key), or reserved for a comparison's studies (unless
    ``of_comparison``): ConflictError.
    """
    if not of_comparison:
        refuse_reserved_name(session=session, name=spec.name)
    return create_submitted(
        session=session,
        model=StudyRecord,
        spec=spec,
        idempotency_key=idempotency_key,
        owner=owner,
        resume=False,
        cancel_requested=False,
        claims=0,
    )


def get_study(*, session: Session, study_id: str) -> StudyRecord:
    """The study, or NotFoundError."""
    return StudyRecord.find_or_raise_by_id(session, study_id)


#: A study row's version, what a cached read is keyed by: ``updated_at`` moves on every write to the row.
_VERSION = (StudyRecord.id, StudyRecord.updated_at, StudyRecord.state, StudyRecord.cancel_requested)


def get_study_version(*, session: Session, study_id: str) -> tuple:
    """The study's version ``(id, updated_at, state, cancel_requested)`` (one indexed row, no JSON), or
    NotFoundError."""
    row = session.execute(sa.select(*_VERSION).where(StudyRecord.id == study_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"{StudyRecord.kind} not found")
    return tuple(row)


def list_study_versions(
    *, session: Session, limit: int, offset: int, state: StudyState | None = None
) -> tuple[int, tuple[tuple, ...]]:
    """``(total, page)`` of studies, newest first, optionally in one state; each as its version (what a cached read
    is keyed by, as :func:`get_study_version`). :func:`get_studies` loads them."""
    where = [StudyRecord.state == StudyState(state).value] if state else []
    total = session.scalar(sa.select(sa.func.count()).select_from(StudyRecord).where(*where)) or 0
    rows = session.execute(
        sa.select(*_VERSION).where(*where).order_by(StudyRecord.created_at.desc()).limit(limit).offset(offset)
    ).all()
    return total, tuple(tuple(r) for r in rows)


def get_studies(*, session: Session, study_ids: list[str]) -> list[StudyRecord]:
    """The studies of ``study_ids`` that exist, in that order."""
    found = {r.id: r for r in session.scalars(sa.select(StudyRecord).where(StudyRecord.id.in_(study_ids)))}
    return [found[i] for i in study_ids if i in found]


def cancel_study(*, session: Session, study_id: str) -> StudyRecord:
    """QUEUED → CANCELLED now; RUNNING → a cancel request its worker acts on within seconds."""
    record = StudyRecord.find_or_raise_by_id(session, study_id, for_update=True)
    if record.state == StudyState.QUEUED:
        record.state = StudyState.CANCELLED.value
        record.finished_at = utcnow()
    elif record.state == StudyState.RUNNING:
        record.cancel_requested = True
    else:
        raise ConflictError(f"Study is {record.state}; only a QUEUED or RUNNING study can be cancelled")
    return record


def cancel_if_live(*, session: Session, study_id: str) -> None:
    """:func:`cancel_study` for a study of a comparison being stopped: one that ended since it was read is left as
    it ended (its row is read again under the lock)."""
    record = StudyRecord.find_or_raise_by_id(session, study_id, for_update=True)
    if record.state in (StudyState.QUEUED, StudyState.RUNNING):
        cancel_study(session=session, study_id=study_id)


def resume_study(*, session: Session, study_id: str, n_trials: int | None = None) -> StudyRecord:
    """A CANCELLED or FAILED study (or a SUCCEEDED one given more trials) goes back to the queue.

    What a resume may change is the spec's rule (:data:`search_spaces.spec.RESUMABLE_FIELDS`): the budget only.
    """
    record = StudyRecord.find_or_raise_by_id(session, study_id, for_update=True)
    if record.state in (StudyState.QUEUED, StudyState.RUNNING):
        raise ConflictError(f"Study is {record.state}; there is nothing to resume")
    spec = dict(record.spec)
    current = spec["budget"]["n_trials"]
    if n_trials is not None and n_trials != current:
        if n_trials < current:
            raise ConflictError(f"n_trials can only grow (the study has n_trials={current})")
        try:
            spec = StudySpec.model_validate(spec).resumed(n_trials=n_trials).canonical()
        except ValueError as e:
            raise InvalidSpecError(str(e)) from None
    elif record.state == StudyState.SUCCEEDED:
        raise ConflictError("Study SUCCEEDED; pass a larger n_trials to run more trials")
    record.spec = spec
    record.spec_hash = spec_hash(spec)
    record.state = StudyState.QUEUED.value
    record.resume = True
    record.cancel_requested = False
    record.error = None
    record.finished_at = None
    notify_queued(session)
    return record


# -- the worker's side -------------------------------------------------------------------------------------------


#: How many of the oldest claimable studies a claim looks at to pick its comparison's largest.
CLAIM_WINDOW = 64


def study_size(spec: dict[str, Any]) -> tuple[int, int]:
    """A study's size for claiming largest-first: its epoch budget, else trials × epochs per trial; among equal
    budgets the smaller batch size first (more optimizer steps per epoch: never faster per epoch)."""
    budget, workload = spec.get("budget") or {}, spec.get("workload") or {}
    epochs = budget.get("epochs") or int(budget.get("n_trials") or 1) * int(workload.get("epochs") or 1)
    return int(epochs), -int(workload.get("batch_size") or 0)


def claim_next_study(*, session: Session, worker_id: str, stale_after_s: float) -> StudyRecord | None:
    """Claim the oldest QUEUED study, or a RUNNING one whose worker went silent. None when there is none.

    Among the oldest study's comparison's claimable studies, the largest (:func:`study_size`) goes first, so that
    a comparison does not end waiting on one long study started last. On PostgreSQL ``FOR UPDATE SKIP LOCKED``
    lets workers pass each other's candidates; the conditional UPDATE then makes the claim exclusive on every
    database (it matches only if nobody claimed the row meanwhile).
    """
    end_requested_cancels(session=session, stale_after_s=stale_after_s)
    stale_before = utcnow() - timedelta(seconds=stale_after_s)
    claimable = sa.or_(
        StudyRecord.state == StudyState.QUEUED.value,
        sa.and_(StudyRecord.state == StudyState.RUNNING.value, StudyRecord.heartbeat_at < stale_before),
    )
    candidates = list(
        session.scalars(
            sa.select(StudyRecord)
            .where(claimable)
            .order_by(StudyRecord.created_at)
            .limit(CLAIM_WINDOW)
            .with_for_update(skip_locked=True)
        )
    )
    if not candidates:
        return None
    candidate = candidates[0]
    if candidate.comparison_id is not None:
        peers = [c for c in candidates if c.comparison_id == candidate.comparison_id]
        candidate = max(peers, key=lambda c: study_size(c.spec))  # the first of the largest: oldest on ties
    now = utcnow()
    # `claimable` again: a QUEUED row another worker took is RUNNING now, a stale one has a fresh heartbeat
    result = session.execute(
        sa.update(StudyRecord)
        .where(StudyRecord.id == candidate.id, claimable)
        .values(
            state=StudyState.RUNNING.value,
            worker_id=worker_id,
            heartbeat_at=now,
            claims=StudyRecord.claims + 1,
            started_at=sa.func.coalesce(StudyRecord.started_at, now),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    session.expire(candidate)
    return session.get(StudyRecord, candidate.id)


def has_claimable(*, session: Session, stale_after_s: float) -> bool:
    """Whether a study waits to be claimed (cheap: what an idle worker asks before claiming)."""
    stale_before = utcnow() - timedelta(seconds=stale_after_s)
    claimable = sa.or_(
        StudyRecord.state == StudyState.QUEUED.value,
        sa.and_(StudyRecord.state == StudyState.RUNNING.value, StudyRecord.heartbeat_at < stale_before),
    )
    return session.scalar(sa.select(StudyRecord.id).where(claimable).limit(1)) is not None


class Beat(NamedTuple):
    """What a heartbeat learned about the worker's study."""

    cancel_requested: bool  # the user asked to cancel it
    held: bool  # the study is still this worker's (False: another worker took it over; stop at once)


def _held_by(study_id: str, worker_id: str) -> sa.ColumnElement[bool]:
    """The study is RUNNING under this worker's claim. A study that left RUNNING meanwhile (a claim ended it
    CANCELLED while the worker was silent, and maybe a resume queued it again) is no longer the worker's, even
    though its row still names the worker."""
    return sa.and_(
        StudyRecord.id == study_id,
        StudyRecord.worker_id == worker_id,
        StudyRecord.state == StudyState.RUNNING.value,
    )


def heartbeat(*, session: Session, worker_id: str, study_id: str | None) -> Beat:
    """Renew a worker's and its study's heartbeat (the study's only while this worker holds it: :func:`_held_by`).

    Returns whether a cancel was requested and whether the study is still held: 0 rows renewed means another
    worker claimed it (this one looked dead), or a claim cancelled it meanwhile, and this worker must drop its run
    without another write.
    """
    now = utcnow()
    session.execute(
        sa.update(WorkerRecord).where(WorkerRecord.id == worker_id).values(heartbeat_at=now, study_id=study_id)
    )
    if study_id is None:
        return Beat(cancel_requested=False, held=True)
    renewed = session.execute(
        sa.update(StudyRecord)
        .where(_held_by(study_id, worker_id))
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    cancel = bool(session.scalar(sa.select(StudyRecord.cancel_requested).where(StudyRecord.id == study_id)))
    return Beat(cancel_requested=cancel, held=renewed == 1)


def record_epochs_spent(*, session: Session, study_id: str, worker_id: str, epochs: int) -> None:
    """Store a running study's epochs spent (only while that worker still holds the study)."""
    session.execute(
        sa.update(StudyRecord)
        .where(_held_by(study_id, worker_id))
        .values(epochs_spent=epochs, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def finish_study(
    *,
    session: Session,
    study_id: str,
    worker_id: str,
    state: StudyState,
    error: str | None = None,
    outcome: dict | None = None,
) -> None:
    """Record how a worker's run of the study ended (only while that worker still holds the study).

    A run that ends by going back to the queue (the worker shut down, found the lease held, or met an outage) keeps
    a requested cancel: such a study ends CANCELLED here instead of running again. A run that ended CANCELLED on a
    cancel withdrawn since (its comparison was resumed while the run was stopping) goes back to the queue instead:
    what the user asked for last was to carry on.
    """
    state = StudyState(state)
    now = utcnow()
    requested = _cancel_requested(session=session, study_id=study_id, worker_id=worker_id)
    if requested is None:  # no longer this worker's study: nothing to record
        return
    if state == StudyState.QUEUED and requested:
        state, error = StudyState.CANCELLED, error or "cancelled"
    elif state == StudyState.CANCELLED and not requested:
        state, error = StudyState.QUEUED, None
    session.execute(
        sa.update(StudyRecord)
        .where(_held_by(study_id, worker_id))
        .values(
            state=state.value,
            error=error,
            outcome=outcome,
            **({"epochs_spent": int(outcome.get("epochs_spent") or 0)} if outcome else {}),
            cancel_requested=False,
            resume=False,
            finished_at=now if state.is_finished else None,
            heartbeat_at=None if state == StudyState.QUEUED else now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if state == StudyState.QUEUED:
        notify_queued(session)


def _cancel_requested(*, session: Session, study_id: str, worker_id: str) -> bool | None:
    """Whether a cancel is requested for the study this worker holds, None if it holds it no more (the row locked
    until commit: a cancel request, or its withdrawal, is either seen here or comes after the study left RUNNING,
    when the API cancels or resumes it outright)."""
    requested = session.scalar(
        sa.select(StudyRecord.cancel_requested).where(_held_by(study_id, worker_id)).with_for_update()
    )
    return None if requested is None else bool(requested)


def end_requested_cancels(*, session: Session, stale_after_s: float) -> int:
    """CANCEL the claimable studies whose cancel was requested: a RUNNING study whose worker went silent (died, or
    lost the database before it could record the end). Such a study is never claimed to run again. Returns how
    many."""
    now = utcnow()
    return session.execute(
        sa.update(StudyRecord)
        .where(
            StudyRecord.cancel_requested.is_(True),
            sa.or_(
                StudyRecord.state == StudyState.QUEUED.value,
                sa.and_(
                    StudyRecord.state == StudyState.RUNNING.value,
                    StudyRecord.heartbeat_at < now - timedelta(seconds=stale_after_s),
                ),
            ),
        )
        .values(
            state=StudyState.CANCELLED.value,
            cancel_requested=False,
            error="cancelled",
            finished_at=now,
            heartbeat_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount


def live_workers(*, session: Session, stale_after_s: float) -> int:
    """Workers that heartbeated within ``stale_after_s``."""
    return WorkerRecord.count_live(session, utcnow() - timedelta(seconds=stale_after_s))
