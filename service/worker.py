"""The worker: claims queued studies from the database and runs them with the engine, one at a time.

Several workers can share one PostgreSQL database (claims use ``FOR UPDATE SKIP LOCKED`` and a conditional update).
A worker claims its next study as soon as its study ends. An idle one is woken by PostgreSQL's ``NOTIFY`` when a
study enters the queue (``LISTEN``); on SQLite it looks for one every :data:`IDLE_POLL_S`.
A worker heartbeats itself and its study; a RUNNING study whose worker went silent is claimed again and resumed.
On SIGTERM/SIGINT the running study is stopped and put back in the queue for another worker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid

from ._optuna import Backoff, is_outage
from .core.config import Settings
from .core.db import migrate, session_scope
from .crud import QUEUE_CHANNEL, claim_next_study, finish_study, has_claimable, heartbeat, record_epochs_spent
from .errors import FencedError, InvalidSpecError, LeaseHeldError, NameTakenError, StorageError
from .models import StudyState, WorkerRecord, utcnow

__all__ = ["IDLE_POLL_S", "Worker"]

log = logging.getLogger(__name__)

#: How often an idle worker on a database without LISTEN/NOTIFY (SQLite) asks whether a study is queued.
IDLE_POLL_S = 0.1


class Worker:
    """One worker process's loop. ``run()`` blocks until ``stop()`` (or a signal, with ``handle_signals``)."""

    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._cancel = threading.Event()  # set by the heartbeat when the running study's cancel is requested
        self._fenced = threading.Event()  # set by the heartbeat when another worker took the running study over
        self._current: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()  # a study may have entered the queue (PostgreSQL NOTIFY), or stop()
        self._listens = self.url.startswith("postgresql")

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, handle_signals: bool = False) -> None:
        """Claim and run studies until :meth:`stop` (or SIGTERM/SIGINT, with ``handle_signals``)."""
        from .engine import ensure_ray
        from .engine.runners import RUNNERS

        ensure_ray(self.settings.ray_address)  # up front, so a submitted study starts at once
        RUNNERS.prestart()  # and a warm trial runner with it (a 1-CPU one, released if no study comes soon)
        # registered once it can run a trial at once: /readyz counts it from here
        if not self._stored(self._register, "register the worker", forever=True):
            return  # stopped before the database ever answered
        beat = threading.Thread(target=self._heartbeat_loop, name="worker-heartbeat", daemon=True)
        beat.start()
        if handle_signals:  # after Ray starts: ray.init installs a SIGTERM handler of its own that exits
            self._install_signals()
        if self._listens:
            threading.Thread(target=self._listen_loop, name="worker-listen", daemon=True).start()
        log.info("worker %s ready (database %s)", self.id, _safe_url(self.url))
        advanced = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() - advanced >= self.settings.worker_poll_s:
                    self._advance_comparisons()
                    advanced = time.monotonic()
                claimed = self._claim()
                if claimed is None:
                    self._idle()
                    continue
                try:
                    self._run_one(*claimed)
                except Exception:  # never the end of the worker: the study's heartbeat lapses and it is claimed again
                    log.exception("worker %s: running study %s failed unexpectedly", self.id, claimed[1])
                    with self._lock:
                        self._current = None
                    self._stop.wait(self.settings.worker_poll_s)
                # the study's end may let its comparison move on (and queue studies): at once, then claim at once
                self._advance_comparisons()
                advanced = time.monotonic()
        finally:
            try:
                with session_scope(self.url) as s:
                    record = s.get(WorkerRecord, self.id)
                    if record is not None:
                        record.stopped_at = utcnow()
            except Exception:  # the database is down as we stop: the record goes stale on its own
                log.warning("could not record that worker %s stopped", self.id, exc_info=True)
            log.info("worker %s stopped", self.id)

    def _claim(self) -> tuple[str, str, dict, bool] | None:
        try:
            with session_scope(self.url) as s:
                record = claim_next_study(session=s, worker_id=self.id, stale_after_s=self.settings.worker_stale_s)
                return None if record is None else (record.id, record.name, dict(record.spec), record.resume)
        except StorageError:
            log.warning("could not reach the database; retrying", exc_info=True)
            return None

    def _idle(self) -> None:
        """Wait for a study to claim, up to ``worker_poll_s``: woken by a NOTIFY (PostgreSQL), else by a short poll."""
        deadline = time.monotonic() + self.settings.worker_poll_s
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._wake.wait(left if self._listens else min(IDLE_POLL_S, left)):
                self._wake.clear()
                return
            if not self._listens and self._queued():
                return

    def _queued(self) -> bool:
        try:
            with session_scope(self.url) as s:
                return has_claimable(session=s, stale_after_s=self.settings.worker_stale_s)
        except Exception:  # the database is away: the claim after worker_poll_s reports it
            return False

    def _listen_loop(self) -> None:
        """``LISTEN`` for studies entering the queue (PostgreSQL); each notice wakes the idle loop."""
        import psycopg
        from sqlalchemy.engine import make_url

        conninfo = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {QUEUE_CHANNEL}")
                    self._wake.set()  # (re)connected: a notice may have been missed meanwhile
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except Exception as e:  # the database is away: the idle loop still polls every worker_poll_s
                log.debug("LISTEN %s: %s; reconnecting", QUEUE_CHANNEL, e)
                self._stop.wait(2.0)

    def _advance_comparisons(self) -> None:
        """Comparisons move on as their studies end: re-runs queued after tuning, the result once re-runs are done."""
        from .comparisons.machine import advance_all

        try:
            advance_all(
                self.url,
                max_failures=self.settings.comparison_max_failures,
                retry_s=self.settings.comparison_retry_s,
            )
        except Exception:  # the next loop retries; a study's run never waits on a comparison's bookkeeping
            log.warning("advancing comparisons failed", exc_info=True)

    def _register(self) -> None:
        migrate(self.url)
        with session_scope(self.url) as s:
            if s.get(WorkerRecord, self.id) is None:
                s.add(WorkerRecord(id=self.id, host=socket.gethostname(), pid=os.getpid()))

    def _stored(self, write, what: str, forever: bool = False) -> bool:
        """Run ``write`` until the database takes it: retried with back-off through an outage, for up to
        ``db_outage_retry_s`` (``forever``: until :meth:`stop`). Returns whether it was stored."""
        backoff = Backoff(None if forever else self.settings.db_outage_retry_s)
        while True:
            try:
                write()
            except Exception as e:
                if not is_outage(e):
                    raise
                delay = backoff.next()
                if backoff.failures == 1:
                    log.warning("could not %s: the database is unavailable; retrying", what)
                if delay is None:
                    log.error("gave up trying to %s (%s)", what, e)
                    return False
                if forever and self._stop.wait(delay):
                    return False
                if not forever:
                    time.sleep(delay)
                continue
            if backoff.failures:
                log.info("%s: done after %d retries", what, backoff.failures)
            return True

    # -- one study ------------------------------------------------------------------------------------------------

    def _run_one(self, study_id: str, name: str, spec: dict, resume: bool) -> None:
        from .engine import run_study

        with self._lock:
            self._current = study_id
            self._cancel.clear()
            self._fenced.clear()
        log.info("worker %s runs study %s (%s)%s", self.id, name, study_id, " [resume]" if resume else "")
        state, error, outcome = StudyState.FAILED, None, None
        try:
            result = run_study(
                spec,
                self.url,
                resume=resume,
                should_cancel=lambda: self._cancel.is_set() or self._stop.is_set(),
                on_progress=lambda counts: self._record_spent(study_id, counts.epochs_spent),
                results_dir=self.settings.ray_results_dir,
                storage_path=self.settings.checkpoint_path,
                fenced=self._fenced.is_set,
                driver=self.id,
                checkpoint_interval_s=self.settings.checkpoint_interval_s,
            )
            outcome = result.as_dict()
            state, error = result.state, result.reason if result.state != StudyState.SUCCEEDED else None
            if state == StudyState.CANCELLED and not self._cancel.is_set():
                # stopped because this worker is shutting down, not by a user: back to the queue for another
                state, error = StudyState.QUEUED, None
        except FencedError as e:
            # another worker took the study over (this one looked dead): it records the study, this one nothing
            log.warning("worker %s: %s; its run is dropped (fenced)", self.id, e)
            with self._lock:
                self._current = None
            return
        except LeaseHeldError as e:
            # another live driver still holds the study's lease (its worker looked stale but is not): retry later,
            # after a pause, rather than claiming it straight back
            log.warning("study %s: %s; requeued", name, e)
            state, error = StudyState.QUEUED, None
            self._stop.wait(self.settings.worker_stale_s / 2)
        except NameTakenError as e:  # an Optuna study outside the service holds the name: retrying cannot help
            error = str(e)
        except InvalidSpecError as e:
            error = f"invalid spec: {e}"
        except Exception as e:  # the study fails with the reason; the worker lives on
            if not is_outage(e):
                log.exception("study %s failed", name)
                error = f"{type(e).__name__}: {e}"
            else:  # the database stayed away longer than the engine waits: the study goes back to the queue
                log.warning("study %s: the database is unavailable (%s); requeued", name, e)
                state, error = StudyState.QUEUED, None

        def finish() -> None:
            with session_scope(self.url) as s:
                finish_study(session=s, study_id=study_id, worker_id=self.id, state=state, error=error, outcome=outcome)

        # if even this gives up, the study's heartbeat goes stale and a worker claims it again: a rerun of a
        # finished study only records its outcome
        self._stored(finish, f"record the end of study {name}")
        with self._lock:
            self._current = None
        log.info("study %s: %s%s", name, state, f" ({error})" if error else "")

    def _record_spent(self, study_id: str, epochs: int) -> None:
        """Keep the study record's ``epochs_spent`` current as trials end (a miss is fixed by the next, or the end)."""
        try:
            with session_scope(self.url) as s:
                record_epochs_spent(session=s, study_id=study_id, worker_id=self.id, epochs=epochs)
        except Exception as e:  # bookkeeping: the study runs on, and its end records the final count
            log.warning("could not record epochs spent of study %s: %s", study_id, e)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_s):
            self.beat()
        self.beat()

    def beat(self) -> None:
        with self._lock:
            current = self._current
        try:
            with session_scope(self.url) as s:
                beat = heartbeat(session=s, worker_id=self.id, study_id=current)
        except Exception:  # the next beat retries; a study is only taken over after worker_stale_s of silence
            log.warning("heartbeat failed", exc_info=True)
            return
        if beat.cancel_requested:
            with self._lock:  # the study may have ended during the beat: a cancel is its own, never the next's
                if self._current == current:
                    self._cancel.set()
        if not beat.held:
            self._fence(current)

    def _fence(self, study_id: str | None) -> None:
        """Another worker holds ``study_id`` now: stop its run at once, writing nothing more (the engine checks)."""
        with self._lock:
            if study_id is None or self._current != study_id or self._fenced.is_set():
                return
            self._fenced.set()
        log.warning("worker %s: another worker took study %s over; stopping its run (fenced)", self.id, study_id)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
