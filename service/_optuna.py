"""The one adapter to Optuna: opening its RDB storage for a long-running service, and the only code that touches
Optuna's private API (``Study._storage``, ``Study._study_id``, ``FrozenTrial._trial_id``).

Optuna's public API has no way to fail another driver's RUNNING trial, to overwrite an intermediate value a
restarted trial reports again, or to write a study's system attrs; this module does those through the storage
object, so that an Optuna upgrade that changes them breaks here and nowhere else.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb import models as _rdb_models
from optuna.storages._rdb import storage as _rdb_storage
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from .core.db import TRANSIENT_ERRORS, engine_kwargs, normalize_url, on_dispose, sqlite_synchronous
from .errors import FencedError

__all__ = [
    "Backoff",
    "RetryingRDBStorage",
    "is_outage",
    "is_transient",
    "close_storage",
    "end_trial",
    "fail_trial",
    "fenced_writes",
    "open_storage",
    "read_study_system_attr",
    "reopen_trial",
    "set_intermediate_value",
    "set_user_attrs",
    "stored_intermediate_values",
    "study_system_attr_json",
    "swap_study_system_attr",
    "write_study_system_attr",
]

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_STORAGES: dict[str, optuna.storages.RDBStorage] = {}
#: PostgreSQL's SQLSTATE for a transaction ended by ``idle_in_transaction_session_timeout``
#: (``TVLARS_DB_IDLE_IN_TRANSACTION_S``; psycopg raises it as an InternalError): the connection is gone, not the server.
IDLE_IN_TRANSACTION_TIMEOUT = "25P03"
#: Back-off between retries through an outage: from the first value, doubling up to the last.
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0


class Backoff:
    """The delays between retries through a database outage: ``RETRY_FIRST_S`` doubling up to ``RETRY_MAX_S``,
    for up to ``total_s`` seconds from now (None: no end)."""

    def __init__(self, total_s: float | None) -> None:
        self.deadline = None if total_s is None else time.monotonic() + total_s
        self.failures = 0
        self._delay = RETRY_FIRST_S

    def next(self) -> float | None:
        """Count a failure; the seconds to wait before the next try, or None if that try would be past the end."""
        self.failures += 1
        delay = self._delay
        if self.deadline is not None and time.monotonic() + delay > self.deadline:
            return None
        self._delay = min(RETRY_MAX_S, delay * 2)
        return delay


def is_transient(error: BaseException) -> bool:
    """The database is unreachable or restarting (Optuna wraps SQLAlchemy's error in StorageInternalError)."""
    if isinstance(error, StorageInternalError):
        error = error.__cause__ or error
    orig = getattr(error, "orig", None)
    if getattr(orig, "sqlstate", None) == IDLE_IN_TRANSACTION_TIMEOUT:
        return True  # PostgreSQL ended a transaction this process left idle (it was stopped inside it): retry anew
    if not isinstance(error, TRANSIENT_ERRORS):
        return False
    if type(orig).__module__ == "sqlite3":  # SQLite's OperationalError is also "no such table": only a lock passes
        return "locked" in str(orig) or "busy" in str(orig)
    return True


def is_outage(error: BaseException) -> bool:
    """A database outage anywhere in the error's chain (Ray Tune and our own code wrap it): wait and retry,
    never fail a study for it."""
    from .errors import StorageError

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, StorageError) or is_transient(e):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDB storage that waits through a database outage: each storage call is retried with back-off on a
    transient error for up to ``retry_s`` seconds, so that a restart of PostgreSQL pauses the engine instead of
    ending its tuning run. Then the error is raised as before.

    A write whose commit was sent but not acknowledged may have landed: a retried ``set_trial_state_values`` that
    finds its trial already finished counts as done.

    Inside :func:`fenced_writes` (on this thread), every write to a trial first proves, in its own transaction, that
    the study's lease is still this driver's (:meth:`_prove_lease`).
    """

    retry_s: float = 0.0
    _ends = threading.local()  # .attrs: {trial id: user attrs to write in the transaction that ends the trial}
    _inside = threading.local()  # a retried call that calls another (create_new_trial → _create_new_trial) retries once
    _fences = threading.local()  # .by_storage: {id(storage): (study_id, lease key, the lease's JSON prefix)}

    def _prove_lease(self) -> None:
        """Under :func:`fenced_writes`: lock the study's lease row in the transaction the write is about to make
        (the thread's scoped session, which Optuna's call then uses and commits: a no-op ``UPDATE`` that matches
        only while the lease names this driver), so that a driver that lost the lease — even one paused between
        its last check and this write — writes nothing. On PostgreSQL the row lock orders this write before or
        after another driver's take-over; on SQLite the ``UPDATE`` takes the file's write lock."""
        fence = getattr(self._fences, "by_storage", {}).get(id(self))
        if fence is None:
            return
        study_id, key, prefix = fence
        session = self.scoped_session()
        try:
            held = session.execute(
                sa.update(_SYSTEM_ATTRS)
                .where(
                    _SYSTEM_ATTRS.c.study_id == study_id,
                    _SYSTEM_ATTRS.c.key == key,
                    _SYSTEM_ATTRS.c.value_json.like(prefix + "%"),
                )
                .values(value_json=_SYSTEM_ATTRS.c.value_json)
            ).rowcount
        except Exception:  # (an outage: the retry starts on a clean session)
            session.close()
            raise
        if held != 1:
            session.close()  # (rolls the transaction back)
            raise FencedError("this driver's lease on the study is gone: another driver holds it")

    def _stage_end_attrs(self, trial_id: int) -> None:
        """Under :func:`end_trial`: write the trial's end attrs into the transaction that is about to set its state
        (the thread's scoped session, which Optuna's ``set_trial_state_values`` then uses and commits), so that a
        trial's end is stored whole or not at all."""
        attrs = getattr(self._ends, "attrs", {}).get(trial_id)
        if not attrs:
            return
        session = self.scoped_session()
        try:
            self._user_attrs_without_commit(session, trial_id, attrs)
        except Exception:  # (a finished trial, or an outage: the retry starts on a clean session)
            session.close()
            raise

    def _user_attrs_without_commit(self, session, trial_id: int, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            self._set_trial_attr_without_commit(session, _rdb_models.TrialUserAttributeModel, trial_id, key, value)

    def _retrying(self, name: str, call):
        if getattr(self._inside, "active", False):
            return call()
        self._inside.active = True
        try:
            return self._retry_loop(name, call)
        finally:
            self._inside.active = False

    def _retry_loop(self, name: str, call):
        backoff = Backoff(self.retry_s)
        while True:
            try:
                result = call()
            except UpdateFinishedTrialError:
                if backoff.failures and name == "set_trial_state_values":
                    return True  # our earlier attempt committed before its connection died
                raise
            except Exception as e:
                delay = backoff.next() if is_transient(e) else None
                if delay is None:
                    raise
                if backoff.failures == 1:
                    log.warning("database unavailable or busy (%s): retrying for up to %.0f s", name, self.retry_s)
                time.sleep(delay)
                continue
            if backoff.failures:
                log.warning("database back after %d retries (%s)", backoff.failures, name)
            return result

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attrs of one trial in one transaction: one commit where ``set_trial_user_attr`` makes one
        per key (a trial's end writes a dozen; each commit of a SQLite file waits for its disk)."""

        def write() -> None:
            self._prove_lease()
            with _rdb_storage._create_scoped_session(self.scoped_session, True) as session:
                self._user_attrs_without_commit(session, trial_id, attrs)

        self._retrying("set_trial_user_attrs", write)


#: The writes to a study's trials: each proves the lease first inside :func:`fenced_writes`.
_TRIAL_WRITES = frozenset(
    {
        "create_new_trial",
        "_create_new_trial",
        "set_trial_param",
        "_set_trial_param",
        "set_trial_state_values",
        "set_trial_intermediate_value",
        "set_trial_user_attr",
        "set_trial_system_attr",
    }
)


def _wrap(name: str):
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def retried(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        if name in _TRIAL_WRITES:

            def call() -> Any:
                self._prove_lease()
                if name == "set_trial_state_values":
                    self._stage_end_attrs(kwargs.get("trial_id", args[0] if args else None))
                return method(self, *args, **kwargs)

            return self._retrying(name, call)
        return self._retrying(name, lambda: method(self, *args, **kwargs))

    return retried


#: The storage calls Optuna makes: BaseStorage's public API, and the private ones its ``_CachedStorage`` calls on
#: the RDB storage underneath (``optuna.create_study`` wraps every RDBStorage in one).
_RETRIED = [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))] + [
    n for n in ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials") if hasattr(RDBStorage, n)
]
for _name in _RETRIED:
    setattr(RetryingRDBStorage, _name, _wrap(_name))


def _enable_sqlite_wal(url: str) -> None:
    # WAL lets the API read while the worker writes; the mode is stored in the file, so setting it once suffices.
    engine = sa.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The process's one ``RDBStorage`` for ``url`` (created on first use: tables, WAL for SQLite); it retries
    through outages for ``TVLARS_DB_OUTAGE_RETRY_S`` (see :class:`RetryingRDBStorage`), and on PostgreSQL a
    transaction of it left idle for ``TVLARS_DB_IDLE_IN_TRANSACTION_S`` is ended (its process was stopped inside a
    write: the lease row it locked is freed for a take-over)."""
    url = normalize_url(url)
    with _LOCK:
        storage = _STORAGES.get(url)
        if storage is None:
            parsed = make_url(url)
            sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
            if sqlite_file:
                _enable_sqlite_wal(url)
            from .core.config import get_settings

            storage = RetryingRDBStorage(url, engine_kwargs=engine_kwargs(url, idle_in_transaction=True))
            if sqlite_file:
                sqlite_synchronous(storage.engine)
                storage.engine.dispose()  # the connections made while creating its tables: opened again with it
            storage.retry_s = get_settings().db_outage_retry_s
            _STORAGES[url] = storage
        return storage


def close_storage(url: str) -> None:
    """Forget this process's storage for ``url`` and close its connections (the next ``open_storage`` reopens)."""
    with _LOCK:
        storage = _STORAGES.pop(normalize_url(url), None)
    if storage is not None:
        storage.engine.dispose()


on_dispose(close_storage)


@contextmanager
def fenced_writes(study: optuna.Study, key: str, holder: str) -> Iterator[None]:
    """While inside, this thread's writes to ``study``'s trials are fenced: each commits only if the study system
    attr ``key`` (a lease written by :func:`swap_study_system_attr`, a JSON object whose first key is ``"id"``)
    still names ``holder``, checked in the write's own transaction; else :class:`~service.errors.FencedError`.
    A check before a write leaves a gap (a process paused between the two); this one does not. Where the storage
    is not ours, nothing is checked."""
    backend = _rdb(study)
    if not isinstance(backend, RetryingRDBStorage):
        yield
        return
    fences = backend._fences.__dict__.setdefault("by_storage", {})
    before = fences.get(id(backend))
    fences[id(backend)] = (study._study_id, key, '{"id": ' + json.dumps(holder))
    try:
        yield
    finally:
        if before is None:
            fences.pop(id(backend), None)
        else:
            fences[id(backend)] = before


@contextmanager
def _ending(storage: BaseStorage, trial_id: int, attrs: Mapping[str, Any]) -> Iterator[None]:
    """While inside, the write that sets the trial's state also writes ``attrs``, in one transaction (where the
    storage is not ours: ``attrs`` are written first, one call per key)."""
    backend = _unwrapped(storage)
    if not isinstance(backend, RetryingRDBStorage):
        _set_user_attrs(storage, trial_id, attrs)
        yield
        return
    ends = backend._ends.__dict__.setdefault("attrs", {})
    ends[trial_id] = attrs
    try:
        yield
    finally:
        ends.pop(trial_id, None)


def end_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    attrs: Mapping[str, Any],
    values: float | list[float] | None = None,
    state: TrialState | None = None,
) -> None:
    """``study.tell(trial, values, state=state)`` with ``attrs`` as the trial's user attrs, written in the same
    transaction as its state where the storage is ours: a trial's end is stored whole or not at all (a driver
    stopped between two commits would leave a RUNNING trial that looks told)."""
    with _ending(study._storage, trial._trial_id, attrs):
        study.tell(trial, values, state=state)


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> bool:
    """FAIL a RUNNING trial this process did not ask for (a dead driver's), with ``attrs`` as user attrs (one
    transaction where the storage is ours).

    Returns whether this call made it FAIL (False: it had finished meanwhile).
    """
    with _ending(study._storage, trial._trial_id, attrs):
        return study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """``trial.set_user_attr`` for each of ``attrs``, written in one transaction where the storage is ours."""
    if not attrs:
        return
    _set_user_attrs(trial.storage, trial._trial_id, attrs)
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what Trial.set_user_attr keeps for the trial's reads


def _set_user_attrs(storage: BaseStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """``attrs`` as the trial's user attrs: one transaction on our RDB storage, else one call per key."""
    backend = _unwrapped(storage)
    if isinstance(backend, RetryingRDBStorage):
        backend.set_trial_user_attrs(trial_id, attrs)
    else:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)


def set_intermediate_value(study: optuna.Study, trial: optuna.Trial, step: int, value: float) -> None:
    """Store ``value`` at ``step``, overwriting a value reported before (``Trial.report`` keeps the first and warns:
    a trial Ray restarted reports its epochs again)."""
    study._storage.set_trial_intermediate_value(trial._trial_id, step, value)


def reopen_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> optuna.Trial:
    """A live handle on a RUNNING trial this process did not ask for (a dead driver's), to continue it."""
    return optuna.Trial(study, trial._trial_id)


def stored_intermediate_values(study: optuna.Study, trial: optuna.Trial) -> dict[int, float]:
    """The trial's per-step values as stored now (a live ``Trial`` keeps no copy of them)."""
    return study._storage.get_trial(trial._trial_id).intermediate_values


def read_study_system_attr(study: optuna.Study, key: str) -> Any:
    """A study system attr, read fresh from the storage (``Study.system_attrs`` is deprecated)."""
    return study._storage.get_study_system_attrs(study._study_id).get(key)


def _rdb(study: optuna.Study) -> RDBStorage:
    return _unwrapped(study._storage)


def _unwrapped(storage: BaseStorage) -> BaseStorage:
    return getattr(storage, "_backend", storage)  # optuna.create_study wraps an RDBStorage in a _CachedStorage


_SYSTEM_ATTRS = sa.table(
    "study_system_attributes", sa.column("study_id"), sa.column("key"), sa.column("value_json", sa.Text)
)


def study_system_attr_json(study: optuna.Study, key: str) -> str | None:
    """A study system attr's stored JSON text (what :func:`swap_study_system_attr` compares), or None."""
    where = (_SYSTEM_ATTRS.c.study_id == study._study_id, _SYSTEM_ATTRS.c.key == key)
    with _rdb(study).engine.connect() as conn:
        return conn.scalar(sa.select(_SYSTEM_ATTRS.c.value_json).where(*where))


def swap_study_system_attr(study: optuna.Study, key: str, expected: str | None, value: Any) -> str | None:
    """Compare-and-set a study system attr: store ``value`` only if the stored JSON text is still ``expected``
    (None: the attr is absent). One ``UPDATE … WHERE value_json = expected`` (or an INSERT that the table's
    unique key refuses to a second writer), so two drivers can never both succeed.

    Returns the JSON text now stored (what to pass as ``expected`` next time), or None if another writer changed it
    first. Retried through an outage like every storage call (a commit whose answer was lost counts as done).
    """
    text = json.dumps(value)
    rdb = _rdb(study)
    where = (_SYSTEM_ATTRS.c.study_id == study._study_id, _SYSTEM_ATTRS.c.key == key)

    def swap() -> str | None:
        with rdb.engine.begin() as conn:
            if expected is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            sa.insert(_SYSTEM_ATTRS).values(study_id=study._study_id, key=key, value_json=text)
                        )
                    return text
                except sa.exc.IntegrityError:
                    pass
            else:
                updated = conn.execute(
                    sa.update(_SYSTEM_ATTRS)
                    .where(*where, _SYSTEM_ATTRS.c.value_json == expected)
                    .values(value_json=text)
                ).rowcount
                if updated == 1:
                    return text
            return text if conn.scalar(sa.select(_SYSTEM_ATTRS.c.value_json).where(*where)) == text else None

    if isinstance(rdb, RetryingRDBStorage):
        return rdb._retrying("swap_study_system_attr", swap)
    return swap()


def write_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)
