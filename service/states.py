"""The life of what the service runs, as the REST API spells it: :class:`StudyState` and :class:`ComparisonPhase`.

A module of its own, importing nothing else of the service, so that the Python client (:mod:`service.client`) reads
a study's state without the server's packages (SQLAlchemy, FastAPI, Ray); :mod:`service.models` stores them.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ComparisonPhase", "StudyState"]


class StudyState(StrEnum):
    """A study's life: QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED (and back to QUEUED on resume)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @classmethod
    def finished(cls) -> frozenset[StudyState]:
        """The states a study ends in (until a resume queues it again)."""
        return frozenset((cls.SUCCEEDED, cls.FAILED, cls.CANCELLED))

    @property
    def is_finished(self) -> bool:
        return self in StudyState.finished()


class ComparisonPhase(StrEnum):
    """A comparison's phase: TUNE → (EXTEND) → RERUN → DONE (:mod:`service.comparisons.machine`). A comparison's
    study has as its ``role`` the phase it was created for (TUNE, EXTEND or RERUN)."""

    TUNE = "tune"
    EXTEND = "extend"
    RERUN = "rerun"
    DONE = "done"
