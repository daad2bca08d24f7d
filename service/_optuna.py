"""The one adapter to Optuna: opening its RDB storage for a long-running service, and the only code that touches
Optuna's private API (``Study._storage``, ``Study._study_id``, ``FrozenTrial._trial_id``).

Optuna's public API has no way to fail another driver's RUNNING trial, to overwrite an intermediate value a
restarted trial reports again, or to write a study's system attrs; this module does those through the storage
object, so that an Optuna upgrade that changes them breaks here and nowhere else.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from .core.db import engine_kwargs, normalize_url

__all__ = [
    "close_storage",
    "fail_trial",
    "open_storage",
    "read_study_system_attr",
    "set_intermediate_value",
    "write_study_system_attr",
]

_LOCK = threading.Lock()
_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


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


def close_storage(url: str) -> None:
    """Forget this process's storage for ``url`` and close its connections (the next ``open_storage`` reopens)."""
    with _LOCK:
        storage = _STORAGES.pop(normalize_url(url), None)
    if storage is not None:
        storage.engine.dispose()


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> bool:
    """FAIL a RUNNING trial this process did not ask for (a dead driver's), with ``attrs`` as user attrs.

    Returns whether this call made it FAIL (False: it had finished meanwhile).
    """
    storage = study._storage
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    return storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def set_intermediate_value(study: optuna.Study, trial: optuna.Trial, step: int, value: float) -> None:
    """Store ``value`` at ``step``, overwriting a value reported before (``Trial.report`` keeps the first and warns:
    a trial Ray restarted reports its epochs again)."""
    study._storage.set_trial_intermediate_value(trial._trial_id, step, value)


def read_study_system_attr(study: optuna.Study, key: str) -> Any:
    """A study system attr, read fresh from the storage (``Study.system_attrs`` is deprecated)."""
    return study._storage.get_study_system_attrs(study._study_id).get(key)


def write_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)
