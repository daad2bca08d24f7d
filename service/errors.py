"""The project's exception types: one base class, one subclass per kind of failure a caller handles differently."""

from __future__ import annotations

__all__ = ["ConflictError", "InvalidSpecError", "NotFoundError", "StorageError", "TvlarsTuneError"]


class TvlarsTuneError(Exception):
    """Base of every error tvlars-tune raises on purpose."""


class NotFoundError(TvlarsTuneError):
    """A study (or trial) that does not exist."""


class ConflictError(TvlarsTuneError):
    """The request clashes with what exists: a name taken by another spec, a study another driver is running."""


class InvalidSpecError(TvlarsTuneError, ValueError):
    """A study spec that does not validate."""


class StorageError(TvlarsTuneError):
    """The database failed underneath us (unreachable, locked for too long, ...)."""
