"""A driver's lease on a study: a heartbeat in the study's system attrs, so that two drivers never run one study.

Every write of the lease is a compare-and-set on the JSON text this driver last wrote
(:func:`.._optuna.swap_study_system_attr`): taking it over from a stale holder, renewing and releasing it all fail
if another driver wrote meanwhile. A driver whose renewal fails has lost the study: :meth:`Lease.holds` turns False
and the engine stops telling Optuna anything (it is *fenced*); and every write to a trial checks, in its own
transaction, that the lease still names this driver (:meth:`Lease.fenced_writes`), so a driver paused between a
check and a write writes nothing either. A driver that died leaves a stale lease (not renewed
for ``ttl_s``, or its process gone on this host); the next driver takes the study over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import optuna

from .._optuna import fenced_writes, study_system_attr_json, swap_study_system_attr
from ..errors import LeaseHeldError
from ..trial_report import StudyAttr

__all__ = ["DEFAULT_LEASE_TTL_S", "Lease", "lease_ttl_s"]

log = logging.getLogger(__name__)

#: A lease not renewed for this long belongs to a dead driver (a dead local process is noticed at once).
DEFAULT_LEASE_TTL_S = 30.0


def lease_ttl_s(given: float | None = None) -> float:
    """``given``, else ``TVLARS_LEASE_TTL_S``, else the default."""
    return given if given is not None else float(os.environ.get("TVLARS_LEASE_TTL_S", DEFAULT_LEASE_TTL_S))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Lease:
    """This driver's claim on a study, renewed by a background thread until released. Use as a context manager.

    Args:
        study: the Optuna study.
        ttl_s: a lease not renewed for this long is stale (another driver may take it over).
        driver: who this driver is, for logs and the trials' ``driver`` attr (default: a random token).
    """

    def __init__(self, study: optuna.Study, ttl_s: float, driver: str | None = None) -> None:
        self.study = study
        self.ttl_s = ttl_s
        run = uuid.uuid4().hex
        self.token = {"id": run, "by": driver or run, "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: str | None = None  # the JSON text of our last write: what the next write expects
        self._confirmed = 0.0  # time.monotonic() of our last successful write
        self._swap_lock = threading.Lock()

    @property
    def driver(self) -> str:
        """Who drives: the worker's id (or this run's token)."""
        return self.token["by"]

    def holder(self) -> dict[str, Any] | None:
        """The live lease of another driver, if any."""
        return self._live_other(self._read())

    def _read(self) -> tuple[str | None, dict[str, Any] | None]:
        text = study_system_attr_json(self.study, StudyAttr.LEASE)
        return text, (json.loads(text) if text else None)

    def _live_other(self, read: tuple[str | None, dict[str, Any] | None]) -> dict[str, Any] | None:
        current = read[1]
        if not current or current.get("released") or current.get("id") == self.token["id"]:
            return None
        if current.get("host") == self.token["host"] and not _pid_alive(int(current.get("pid", -1))):
            return None
        if time.time() - float(current.get("heartbeat", 0)) > self.ttl_s:
            return None
        return current

    def acquire(self) -> None:
        """Take the lease (a compare-and-set over what is stored), or :class:`LeaseHeldError` while another live
        driver holds it or took it first."""
        read = self._read()
        holder = self._live_other(read)
        if holder is None:
            self._written = read[0]
            if self._swap():
                self._thread = threading.Thread(target=self._renew, name="study-lease", daemon=True)
                self._thread.start()
                return
            holder = self._read()[1] or {}
        raise LeaseHeldError(
            f"Study {self.study.study_name!r} is being run by another driver "
            f"(pid {holder.get('pid')} on {holder.get('host')}); cancel it first or wait for it to finish"
        )

    def holds(self) -> bool:
        """Whether this driver still holds the lease. Within ``ttl_s / 2`` of a confirmed write nobody else can
        have taken it; later (this process was paused, or renewals failed) it is checked, by renewing, now."""
        if self._lost.is_set():
            return False
        if time.monotonic() - self._confirmed > self.ttl_s / 2:
            self._swap()
        return not self._lost.is_set()

    def fenced_writes(self):
        """A context in which this thread's writes to the study's trials commit only while this driver holds the
        lease, checked in each write's own transaction (:func:`.._optuna.fenced_writes`): a driver paused between
        a :meth:`holds` and its write cannot write after another took the study over."""
        return fenced_writes(self.study, StudyAttr.LEASE, self.token["id"])

    def release(self) -> None:
        """Stop renewing and mark the lease released, unless another driver holds it now (then nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self._lost.is_set():
            self._swap(released=True)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _swap(self, **extra: Any) -> bool:
        """Write the lease if it is still what we last wrote; else it is lost for good. Returns whether written."""
        with self._swap_lock:
            if self._lost.is_set():
                return False
            value = {**self.token, "heartbeat": time.time(), **extra}
            stored = swap_study_system_attr(self.study, StudyAttr.LEASE, self._written, value)
            if stored is None:
                if self._confirmed:  # (a first take that lost the race is just a LeaseHeldError)
                    self._lost.set()
                    log.warning(
                        "driver %s lost the lease on %s to %s: fenced",
                        self.driver,
                        self.study.study_name,
                        (self._read()[1] or {}).get("by"),
                    )
                return False
            self._written, self._confirmed = stored, time.monotonic()
            return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if not self._swap():
                    return
            except Exception:  # a transient DB error: the next beat retries; the lease lasts ttl_s
                log.warning("could not renew the lease on %s", self.study.study_name, exc_info=True)
