"""A driver's lease on a study: a heartbeat in the study's system attrs, so that two drivers never run one study.

A driver that died leaves a stale lease (not renewed for ``ttl_s``, or its process gone on this host); the next
driver takes the study over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import optuna

from .._optuna import read_study_system_attr, write_study_system_attr
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
    """This driver's claim on a study, renewed by a background thread until released. Use as a context manager."""

    def __init__(self, study: optuna.Study, ttl_s: float) -> None:
        self.study = study
        self.ttl_s = ttl_s
        self.token = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        """The live lease of another driver, if any."""
        current = read_study_system_attr(self.study, StudyAttr.LEASE)
        if not current or current.get("released") or current.get("id") == self.token["id"]:
            return None
        if current.get("host") == self.token["host"] and not _pid_alive(int(current.get("pid", -1))):
            return None
        if time.time() - float(current.get("heartbeat", 0)) > self.ttl_s:
            return None
        return current

    def acquire(self) -> None:
        """Take the lease, or :class:`LeaseHeldError` while another live driver holds it."""
        holder = self.holder()
        if holder is not None:
            raise LeaseHeldError(
                f"Study {self.study.study_name!r} is being run by another driver "
                f"(pid {holder.get('pid')} on {holder.get('host')}); cancel it first or wait for it to finish"
            )
        self._write()
        self._thread = threading.Thread(target=self._renew, name="study-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._write(released=True)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _write(self, **extra: Any) -> None:
        write_study_system_attr(self.study, StudyAttr.LEASE, {**self.token, "heartbeat": time.time(), **extra})

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self._write()
            except Exception:  # a transient DB error: the next beat retries; the lease lasts ttl_s
                log.warning("could not renew the lease on %s", self.study.study_name, exc_info=True)
