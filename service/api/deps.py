"""Typed dependencies: settings, a database session per request, API-key authentication."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from ..core.config import ApiKey, Settings
from ..core.db import session_scope


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


# scope="function": commit before the response goes out, so a client that reads right after a write sees it, and a
# failed commit (a racing duplicate name) becomes this request's 409 rather than an error after a 201.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def _authenticate(request: Request, settings: Settings, needed: str) -> ApiKey | None:
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
    if not match.allows(needed):  # type: ignore[arg-type]
        raise HTTPException(403, f"This API key has {match.scope} scope; this request needs {needed}")
    return match


def require_read(request: Request, settings: SettingsDep) -> ApiKey | None:
    return _authenticate(request, settings, "read")


def require_write(request: Request, settings: SettingsDep) -> ApiKey | None:
    return _authenticate(request, settings, "write")


ReadKey = Annotated[ApiKey | None, Depends(require_read)]
WriteKey = Annotated[ApiKey | None, Depends(require_write)]
