"""Reads served from memory: the bodies of recent study and comparison reads, keyed by the rows' versions.

A read of a study, its trials or its leaderboard costs one primary-key lookup of the study's row; the body is built
(the trial counts, best trial, pages of Optuna's tables, and the JSON) only when no body is cached under the same
key. A comparison's read (its resource, result or report) is keyed by its row's version and its studies' (how many,
their latest ``updated_at``): everything it shows is in those rows, so a cached comparison is never stale.

The key holds everything the API itself writes to the row (its ``updated_at`` changes on every write, the worker's
heartbeats included) and the request's own parameters, so a cancel, resume or finish is never hidden by the cache,
on any API process. What a worker writes to Optuna's tables (trials starting, reporting, finishing) reaches a cached
body within ``TVLARS_API_CACHE_TTL_S`` (default 0.5 s; 0 turns the cache off): trial results arrive on their own time,
and a client cannot tell a result reported 0.5 s later from one served 0.5 s old. A study's end is a write to its
row: the first read after it builds a fresh body, with every trial as the worker left it.

Each cached body carries a weak ``ETag``; a client that sends it back in ``If-None-Match`` gets ``304 Not Modified``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from cachetools import TTLCache
from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from ..core.db import session_scope
from .errors import Responses

__all__ = ["CACHED_RESPONSES", "CachedBody", "ReadCache", "cached_body", "cached_read"]

#: Reads answered from the cache carry an ETag.
CACHED_RESPONSES: Responses = {304: {"description": "Not modified: the ETag sent in If-None-Match is current"}}


@dataclass(frozen=True, slots=True)
class CachedBody:
    body: bytes
    etag: str


class ReadCache:
    """Process-local, thread-safe TTL cache of response bodies (``max_entries`` most recent, each ``ttl_s`` at most)."""

    def __init__(self, ttl_s: float, max_entries: int = 2048) -> None:
        self.ttl_s = ttl_s
        self._entries: TTLCache[Hashable, CachedBody] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_s) if ttl_s > 0 else None
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: Hashable, build: Callable[[], bytes]) -> CachedBody:
        """The body cached under ``key``, or ``build()``'s (then cached). ``build`` runs outside the lock."""
        if self._entries is not None:
            with self._lock:
                hit = self._entries.get(key)
            if hit is not None:
                self.hits += 1
                return hit
        self.misses += 1
        body = build()
        entry = CachedBody(body, f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"')
        if self._entries is not None:
            with self._lock:
                self._entries[key] = entry
        return entry


def cached_body(
    request: Request, key: Hashable, build: Callable[[], bytes], media_type: str = "application/json"
) -> Response:
    """A response from the app's :class:`ReadCache` (``304`` when the client already holds this body)."""
    cache: ReadCache = request.app.state.read_cache
    entry = cache.get_or_build(key, build)
    headers = {"ETag": entry.etag, "Cache-Control": "no-cache"}
    if entry.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(entry.body, media_type=media_type, headers=headers)


Version = TypeVar("Version", bound=Hashable)


def cached_read(
    request: Request,
    database_url: str,
    params: tuple,
    version: Callable[[Session], Version],
    build: Callable[[Session, Version], BaseModel | bytes],
    media_type: str = "application/json",
) -> Response:
    """One read through the cache: ``version`` (cheap: the rows' versions, raising NotFoundError for a missing one)
    is read on every request and, with the request's ``params``, keys the body; ``build`` makes the body (a model
    as JSON, or bytes of ``media_type``) in the same session only when none is cached under that key."""
    with session_scope(database_url, read_only=True) as session:
        current = version(session)

        def body() -> bytes:
            out = build(session, current)
            return out.model_dump_json().encode() if isinstance(out, BaseModel) else out

        return cached_body(request, (*params, current), body, media_type)


def _etags(header: str) -> set[str]:
    """The entity tags of an ``If-None-Match`` header (weak or strong: a GET compares them weakly)."""
    tags = {t.strip() for t in header.split(",") if t.strip()}
    return tags | {t if t.startswith("W/") else f"W/{t}" for t in tags}
