"""How a write answers, for every resource: the resource as written, committed before the response goes out (a
client that reads right after sees it, and a racing duplicate name fails the request with a 409 rather than after a
201); a submit is idempotent with an ``Idempotency-Key``: ``201`` new, ``200`` a replay of the same key and spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Header, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

from ..core.db import session_scope

__all__ = ["IdempotencyKey", "submitted", "written"]

#: Makes a submit safe to retry: the same key with the same spec answers the first submit's resource (200).
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]

Record = TypeVar("Record")
Public = TypeVar("Public", bound=BaseModel)


def written(
    database_url: str, write: Callable[[Session], Record], public: Callable[[Session, Record], Public]
) -> Public:
    """``write`` in one transaction, answered with the written record as ``public`` makes it."""
    with session_scope(database_url) as session:
        record = write(session)
        session.flush()
        return public(session, record)


def submitted(
    response: Response,
    database_url: str,
    create: Callable[[Session], tuple[Record, bool]],
    public: Callable[[Session, Record], Public],
    location: Callable[[Public], str],
) -> Public:
    """A submit's answer: ``create`` returns ``(record, created)``; ``201`` for a new record, ``200`` for a replayed
    request, with the resource's ``Location``."""
    created = False

    def write(session: Session) -> Record:
        nonlocal created
        record, created = create(session)
        return record

    out = written(database_url, write, public)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = location(out)
    return out
