"""The service's own tables (study records, workers), next to Optuna's in the same database.

One class per table, with its constraints in ``__table_args__`` and its finders as classmethods (the layout of
Optuna's ``storages/_rdb/models.py``). Engines, sessions and migrations are in :mod:`service.core.db`. The states
they store (:class:`StudyState`, :class:`ComparisonPhase`) are defined in :mod:`service.states`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import sqlalchemy as sa
from sqlalchemy import JSON, Boolean, DateTime, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .errors import NotFoundError
from .states import ComparisonPhase, StudyState

__all__ = [
    "Base",
    "ComparisonPhase",
    "ComparisonRecord",
    "SecretRecord",
    "StudyRecord",
    "StudyState",
    "WorkerRecord",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class _Submitted:
    """The finders of a record submitted over REST (a study, a comparison): by id, unique name or idempotency key."""

    #: What a 404 calls it ("Study not found").
    kind: ClassVar[str]

    @classmethod
    def find_or_raise_by_id(cls, session: Session, record_id: str, *, for_update: bool = False) -> Self:
        """The record, or :class:`NotFoundError` (a 404 over REST); ``for_update`` locks its row and reads it afresh:
        a record the session loaded before (a comparison's studies, say) may have changed until the lock was had."""
        query = sa.select(cls).where(cls.id == record_id)  # type: ignore[attr-defined]
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        record = session.scalars(query).one_or_none()
        if record is None:
            raise NotFoundError(f"{cls.kind} not found")
        return record

    @classmethod
    def find_by_name(cls, session: Session, name: str) -> Self | None:
        return session.scalars(sa.select(cls).where(cls.name == name)).one_or_none()  # type: ignore[attr-defined]

    @classmethod
    def find_by_idempotency_key(cls, session: Session, key: str) -> Self | None:
        query = sa.select(cls).where(cls.idempotency_key == key)  # type: ignore[attr-defined]
        return session.scalars(query).one_or_none()


class StudyRecord(_Submitted, Base):
    """One submitted study. Its trials live in Optuna's tables, under the study's name."""

    kind = "Study"

    __tablename__ = "tvlars_studies"
    __table_args__ = (
        sa.CheckConstraint(f"state IN {tuple(s.value for s in StudyState)}", name="state"),
        sa.Index("ix_tvlars_studies_state_created", "state", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.QUEUED.value)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    owner: Mapped[str | None] = mapped_column(String(16))  # the submitting key's salted owner id, never the key
    resume: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    claims: Mapped[int] = mapped_column(Integer, default=0)  # engine runs started for this study
    heartbeat_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # a comparison's study: which comparison, arm and batch size, and whether it tunes or re-runs the tuned config
    comparison_id: Mapped[str | None] = mapped_column(String(32), index=True)
    arm: Mapped[str | None] = mapped_column(String(32))
    batch_size: Mapped[int | None] = mapped_column(Integer)
    role: Mapped[str | None] = mapped_column(String(8))  # the ComparisonPhase it was created for
    repeat: Mapped[int | None] = mapped_column(Integer)  # which independent tuning (0-based); None: a plain study
    rank: Mapped[int | None] = mapped_column(Integer)  # a re-run study: which of its tuning's top-k configs (1 = best)
    # epochs the study's trials spent (ended trials' stored epochs + running trials'), updated as trials end
    epochs_spent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @classmethod
    def find_by_id(cls, session: Session, study_id: str) -> StudyRecord | None:
        return session.get(cls, study_id)


class ComparisonRecord(_Submitted, Base):
    """One submitted comparison: its spec, its phase and, once done, its result (studies link to it)."""

    kind = "Comparison"

    __tablename__ = "tvlars_comparisons"
    __table_args__ = (sa.CheckConstraint(f"state IN {tuple(s.value for s in StudyState)}", name="state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.QUEUED.value)
    phase: Mapped[str] = mapped_column(String(16), default=ComparisonPhase.TUNE.value)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    owner: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]
    # advancing it failed this many times in a row (it ends FAILED at comparison_max_failures); next try not before
    advance_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None]


class WorkerRecord(Base):
    """A worker process: readiness needs one whose heartbeat is recent."""

    __tablename__ = "tvlars_workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    study_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]

    @classmethod
    def count_live(cls, session: Session, since: datetime) -> int:
        """Workers that heartbeated since ``since`` and have not stopped."""
        query = sa.select(sa.func.count()).select_from(cls).where(cls.heartbeat_at >= since, cls.stopped_at.is_(None))
        return session.scalar(query) or 0


class SecretRecord(Base):
    """A secret the service makes for itself and keeps in the database, shared by every API process: the salt of
    the ``owner`` ids (``owner_salt``) unless TVLARS_OWNER_SALT gives one."""

    __tablename__ = "tvlars_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
