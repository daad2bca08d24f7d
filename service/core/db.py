"""Engines, sessions and migrations of the service's database (the tables themselves are in :mod:`service.models`).

Alembic migrations ship in ``service/migrations`` with their own version table (``tvlars_alembic_version``):
Optuna already owns the default ``alembic_version``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConflictError, StorageError

__all__ = [
    "MIGRATIONS",
    "TRANSIENT_ERRORS",
    "VERSION_TABLE",
    "dispose",
    "engine_kwargs",
    "get_engine",
    "migrate",
    "normalize_url",
    "session_scope",
]

VERSION_TABLE = "tvlars_alembic_version"
MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
#: Seconds SQLite waits on a locked database before failing (readers and writers share one file).
SQLITE_BUSY_TIMEOUT_S = 30

_ENGINES: dict[str, Engine] = {}
_SESSIONS: dict[str, sessionmaker[Session]] = {}
_READ_SESSIONS: dict[str, sessionmaker[Session]] = {}
_LOCK = threading.Lock()
#: What else :func:`dispose` closes (Optuna's storages register here when ``service._optuna`` is imported, so this
#: module needs nothing of that one: the dependency points one way).
_ON_DISPOSE: list[Callable[[str], None]] = []


def on_dispose(close: Callable[[str], None]) -> None:
    """Have :func:`dispose` also call ``close(url)`` (another owner of pooled connections to the same databases)."""
    _ON_DISPOSE.append(close)


def normalize_url(url: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg://`` (the driver we ship); other URLs as given."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def engine_kwargs(url: str, *, idle_in_transaction: bool = False) -> dict:
    """SQLAlchemy engine options from the settings: a busy timeout for SQLite; for a server, a pool sized to the
    API's threads, a short wait for a pooled connection, and connect and statement timeouts, so that a dead or hung
    database is an error within seconds (a 503 over REST) rather than a hang; pre-ping (connections die on restarts).

    ``idle_in_transaction``: PostgreSQL also ends a transaction left idle for ``TVLARS_DB_IDLE_IN_TRANSACTION_S``, so
    that a process stopped inside one does not hold its row locks (a study's lease row) from the others for longer.
    For Optuna's storage, whose transactions are single storage calls; not for the service's, where a comparison's
    step holds its row lock while it reads and computes.
    """
    from .config import get_settings

    settings = get_settings()
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
    }
    if make_url(url).get_backend_name() == "sqlite":
        if make_url(url).database in (None, "", ":memory:"):
            pool = {}  # an in-memory database lives in one connection (SingletonThreadPool): no pool to size
        return {**pool, "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {
        "pool_pre_ping": True,
        **pool,
        "connect_args": {
            "connect_timeout": settings.db_connect_timeout_s,
            "options": f"-c statement_timeout={int(settings.db_statement_timeout_s * 1000)}"
            + (
                f" -c idle_in_transaction_session_timeout={int(settings.db_idle_in_transaction_s * 1000)}"
                if idle_in_transaction
                else ""
            ),
        },
    }


#: Errors that mean the database is unreachable, restarting or saturated, not that the request is wrong.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, SATimeoutError)


def sqlite_synchronous(engine: Engine) -> Engine:
    """``engine``, which sets ``PRAGMA synchronous`` (``TVLARS_SQLITE_SYNCHRONOUS``) on each new connection to a SQLite
    file in WAL mode. NORMAL syncs the WAL at checkpoints, not at every commit: a commit survives the process
    being killed (the OS has the file), not a power loss; FULL waits for the disk at every commit (a trial's end
    makes a few; on a slow disk each is milliseconds). Other journal modes and other databases are left alone."""
    if engine.dialect.name != "sqlite":
        return engine
    from .config import get_settings

    level = get_settings().sqlite_synchronous

    @sa.event.listens_for(engine, "connect")
    def _set_synchronous(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                cursor.execute(f"PRAGMA synchronous={level}")
        finally:
            cursor.close()

    return engine


def get_engine(url: str) -> Engine:
    """The process's engine for ``url`` (one pool per database)."""
    url = normalize_url(url)
    with _LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = sqlite_synchronous(sa.create_engine(url, **engine_kwargs(url)))
            _SESSIONS[url] = sessionmaker(_ENGINES[url], expire_on_commit=False)
            # reads in autocommit: no BEGIN and COMMIT round trips (each statement of a read-committed transaction
            # sees its own snapshot anyway, so a multi-statement read sees nothing different)
            _READ_SESSIONS[url] = sessionmaker(_ENGINES[url].execution_options(isolation_level="AUTOCOMMIT"))
        return _ENGINES[url]


def dispose(url: str) -> None:
    """Close this process's pooled connections to ``url`` (ours and Optuna's), e.g. before dropping the database."""
    url = normalize_url(url)
    with _LOCK:
        _SESSIONS.pop(url, None)
        _READ_SESSIONS.pop(url, None)
        engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
    for close in _ON_DISPOSE:
        close(url)


@contextmanager
def session_scope(url: str, *, read_only: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error; DB failures become our own errors.

    ``read_only``: a session for reads alone, each statement in autocommit (two round trips fewer per request).
    """
    get_engine(url)
    session = (_READ_SESSIONS if read_only else _SESSIONS)[normalize_url(url)]()
    try:
        yield session
        if not read_only:
            session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(f"conflicting write: {e.orig}") from e
    except TRANSIENT_ERRORS as e:
        session.rollback()
        raise StorageError(f"database unavailable: {getattr(e, 'orig', None) or e}") from e
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
            # a migration (or the wait for another process's) may outlast the statement timeout that guards requests
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
