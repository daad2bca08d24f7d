"""Typed dependencies: settings, API-key authentication (roles read ⊆ write ⊆ admin, and who may change a study or
comparison), and paging (``Idempotency-Key`` is in :mod:`.writes`)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request

from ..core.config import ApiKey, Role, Settings
from ..models import ComparisonRecord, StudyRecord

# The dependencies are ``async def``: they do no I/O, and a sync one would cost each request a hop to the threadpool
# and back (FastAPI runs sync dependencies there), as many hops as dependencies.


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


# No session dependency: a route opens its session (``session_scope``) inside its own body, so a pooled connection
# is held only while the route's thread runs. A yield dependency holds it across FastAPI's hops between threads,
# and with more threads than connections every thread can end up waiting on the pool while the requests that hold
# the connections wait for a thread (the known starvation). ``service.main`` caps the threads at the pool's size.


def _authenticate(request: Request, settings: Settings, needed: Role) -> ApiKey | None:
    if not settings.auth_enabled:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "Missing API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
    match = None
    for key in request.app.state.api_keys:  # compare against every key, in constant time each, whatever matches first
        if hmac.compare_digest(key.secret.encode(), token.strip().encode()):
            match = key
    if match is None:
        raise HTTPException(401, "Invalid API key", {"WWW-Authenticate": "Bearer"})
    if not match.allows(needed):
        raise HTTPException(
            403,
            f"This API key has {match.role} scope; this request needs {needed} "
            "(roles in TVLARS_API_KEYS: KEY:read, KEY:write, KEY:admin)",
        )
    return match


async def require_read(request: Request, settings: SettingsDep) -> ApiKey | None:
    return _authenticate(request, settings, "read")


async def require_write(request: Request, settings: SettingsDep) -> ApiKey | None:
    return _authenticate(request, settings, "write")


ReadKey = Annotated[ApiKey | None, Depends(require_read)]
WriteKey = Annotated[ApiKey | None, Depends(require_write)]


def check_owner(key: ApiKey | None, record: StudyRecord | ComparisonRecord, action: str) -> None:
    """A write key may cancel or resume only what it submitted (its ``owner`` id); an admin key anything, and so
    may anyone on a server without keys. A 403 otherwise, saying who may."""
    if key is None or key.role == "admin" or (record.owner is not None and record.owner in _owners(key)):
        return
    kind, admin = record.kind.lower(), "an admin key (KEY:admin in TVLARS_API_KEYS)"
    if record.owner is None:
        detail = f"This {kind} has no owner (submitted while the server had no API keys): only {admin} may {action} it"
    else:
        detail = (
            f"This {kind} was submitted with another API key (owner {record.owner}): only that key or {admin} "
            f"may {action} it"
        )
    raise HTTPException(403, detail)


def _owners(key: ApiKey) -> tuple[str, ...]:
    return (key.owner, key.unsalted_owner) if key.owner else (key.unsalted_owner,)


#: The largest ``offset`` a list accepts (a bound, so a huge number is a 422 rather than a database error).
MAX_OFFSET = 1_000_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
