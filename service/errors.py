"""The project's exception types: one base class, one subclass per kind of failure a caller handles differently."""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "FencedError",
    "InvalidSpecError",
    "LeaseHeldError",
    "NameTakenError",
    "NotFoundError",
    "StorageError",
    "TvlarsTuneError",
]


class TvlarsTuneError(Exception):
    """Base of every error tvlars-tune raises on purpose."""


class NotFoundError(TvlarsTuneError):
    """A study (or trial) that does not exist."""


class ConflictError(TvlarsTuneError):
    """The request clashes with what exists (a 409 over REST): a taken name, a state that does not allow it."""


class LeaseHeldError(ConflictError):
    """Another live driver runs this study: try again later (the worker requeues the study with a back-off)."""


class FencedError(ConflictError):
    """This driver lost its study to another (its worker or lease looked dead): it stopped without telling Optuna
    anything more, and records nothing of the run."""


class NameTakenError(ConflictError):
    """The study's name is taken by a study with another spec: retrying cannot help (the study FAILs at once)."""


class InvalidSpecError(TvlarsTuneError, ValueError):
    """A study spec that does not validate."""


class StorageError(TvlarsTuneError):
    """The database failed underneath us (unreachable, locked for too long, ...)."""
