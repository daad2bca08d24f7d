"""The service's own tables (study records, workers), next to Optuna's in the same database.

Alembic migrations ship in ``service/migrations`` with their own version table (``tvlars_alembic_version``):
Optuna already owns the default ``alembic_version``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, Boolean, DateTime, Integer, MetaData, String, Text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .errors import ConflictError, StorageError
from .storage import engine_kwargs, normalize_url

__all__ = [
    "Base",
    "StudyRecord",
    "StudyState",
    "WorkerRecord",
    "dispose",
    "get_engine",
    "migrate",
    "session_scope",
    "utcnow",
]

VERSION_TABLE = "tvlars_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class StudyState:
    """A study's life: QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED (and back to QUEUED on resume)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ALL = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
    FINISHED = (SUCCEEDED, FAILED, CANCELLED)


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


class StudyRecord(Base):
    """One submitted study. Its trials live in Optuna's tables, under the study's name."""

    __tablename__ = "tvlars_studies"
    __table_args__ = (
        sa.CheckConstraint(f"state IN {StudyState.ALL}", name="state"),
        sa.Index("ix_tvlars_studies_state_created", "state", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.QUEUED)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    owner: Mapped[str | None] = mapped_column(String(16))  # the submitting key's fingerprint, never the key
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

    @classmethod
    def by_id(cls, session: Session, study_id: str) -> StudyRecord | None:
        return session.get(cls, study_id)

    @classmethod
    def by_name(cls, session: Session, name: str) -> StudyRecord | None:
        return session.scalars(sa.select(cls).where(cls.name == name)).one_or_none()

    @classmethod
    def by_idempotency_key(cls, session: Session, key: str) -> StudyRecord | None:
        return session.scalars(sa.select(cls).where(cls.idempotency_key == key)).one_or_none()


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


_ENGINES: dict[str, Engine] = {}
_SESSIONS: dict[str, sessionmaker[Session]] = {}
_LOCK = threading.Lock()


def get_engine(url: str) -> Engine:
    """The process's engine for ``url`` (one pool per database)."""
    url = normalize_url(url)
    with _LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = sa.create_engine(url, **engine_kwargs(url))
            _SESSIONS[url] = sessionmaker(_ENGINES[url], expire_on_commit=False)
        return _ENGINES[url]


def dispose(url: str) -> None:
    """Close this process's pooled connections to ``url`` (ours and Optuna's), e.g. before dropping the database."""
    from .storage import _STORAGES

    url = normalize_url(url)
    with _LOCK:
        _SESSIONS.pop(url, None)
        engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
    storage = _STORAGES.pop(url, None)
    if storage is not None:
        storage.engine.dispose()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error; DB failures become our own errors."""
    get_engine(url)
    session = _SESSIONS[normalize_url(url)]()
    try:
        yield session
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(f"conflicting write: {e.orig}") from e
    except OperationalError as e:
        session.rollback()
        raise StorageError(f"database error: {e.orig}") from e
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def migrate(url: str) -> None:
    """Bring the service's tables to the latest migration (safe to call from several processes at once)."""
    from alembic import command
    from alembic.config import Config

    url = normalize_url(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = get_engine(url)
    with engine.begin() as conn:
        if make_url(url).get_backend_name() == "postgresql":
            # one migrator at a time across processes; released at the end of the transaction
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
