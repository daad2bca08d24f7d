"""Optuna's RDB storage, opened the way a long-running service needs it."""

from __future__ import annotations

import threading

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import make_url

__all__ = ["normalize_url", "open_storage"]

_LOCK = threading.Lock()
_STORAGES: dict[str, optuna.storages.RDBStorage] = {}
#: Seconds SQLite waits on a locked database before failing (readers and writers share one file).
SQLITE_BUSY_TIMEOUT_S = 30


def normalize_url(url: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg://`` (the driver we ship); other URLs as given."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine options: a busy timeout for SQLite, pre-ping for servers (connections die on restarts)."""
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


def _enable_sqlite_wal(url: str) -> None:
    # WAL lets the API read while the worker writes; the mode is stored in the file, so setting it once suffices.
    engine = sa.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The process's one ``RDBStorage`` for ``url`` (created on first use: tables, WAL for SQLite)."""
    url = normalize_url(url)
    with _LOCK:
        storage = _STORAGES.get(url)
        if storage is None:
            if make_url(url).get_backend_name() == "sqlite" and make_url(url).database not in (None, "", ":memory:"):
                _enable_sqlite_wal(url)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
            _STORAGES[url] = storage
        return storage
