"""The FastAPI app. ``create_app(settings)`` builds it; nothing is built at import time.

uvicorn --factory service.main:create_app
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __doc__ as service_doc
from . import crud
from ._optuna import open_storage
from .api.cache import ReadCache
from .api.doors import AllowedHosts, LoopbackOnly
from .api.limits import BodyLimits
from .api.routes import comparisons, health, search_spaces, studies, workloads
from .core.config import ApiKey, Settings, get_settings, owner_id
from .core.db import migrate, session_scope
from .errors import ConflictError, InvalidSpecError, NotFoundError, StorageError
from .metrics import AppMetrics, MetricsMiddleware

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Seconds a client is told to wait (``Retry-After``) when the database is unavailable or saturated.
RETRY_AFTER_S = 2


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API. Migrates the service's tables on start-up; never trains and never waits on Ray."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # sync routes run in anyio's threadpool: as many threads as the pool has connections, so that a thread
        # never waits for a connection (a request beyond that waits for a thread, without holding anything). The
        # pool is sized from the environment's settings (service.core.db.engine_kwargs): the threads are too.
        anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().api_threads
        migrate(settings.database_url)
        open_storage(settings.database_url)  # Optuna's tables too: trial reads must find them from the start
        app.state.api_keys = with_owners(settings)
        yield

    app = FastAPI(
        title="tvlars-tune",
        version="0.1.0",
        summary="Tune TVLARS and its large-batch baselines with Ray Tune + Optuna.",
        description=(service_doc or "")
        + "\n\nSend `Authorization: Bearer <key>` when the server has API keys (TVLARS_API_KEYS). Without keys it "
        "answers only on loopback, and writes must be JSON (`Content-Type: application/json`, bodyless ones too).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.api_keys = settings.keys  # parsed once; their owner ids once the lifespan knows the salt
    app.state.metrics = AppMetrics(settings.database_url)
    app.state.read_cache = ReadCache(settings.api_cache_ttl_s)

    def error(status: int, detail) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    app.add_exception_handler(NotFoundError, lambda r, e: error(404, str(e)))
    app.add_exception_handler(ConflictError, lambda r, e: error(409, str(e)))
    app.add_exception_handler(InvalidSpecError, lambda r, e: error(422, str(e)))
    app.add_exception_handler(
        StorageError,
        lambda r, e: JSONResponse(
            {"detail": "The database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ),
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return error(422, jsonable_encoder(fields))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(500, "Internal server error")

    app.include_router(studies.router)
    app.include_router(comparisons.router)
    app.include_router(search_spaces.router)
    app.include_router(workloads.router)
    app.include_router(health.router)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes)
    # the outermost checks (added last): a refused request costs nothing further
    if settings.host_patterns is not None:
        app.add_middleware(AllowedHosts, patterns=settings.host_patterns, open_server=not settings.auth_enabled)
    if not settings.auth_enabled:
        app.add_middleware(LoopbackOnly)
    return app


def with_owners(settings: Settings) -> list[ApiKey]:
    """The configured keys, each with its ``owner`` id under the owner salt: TVLARS_OWNER_SALT, else the one the
    database keeps (made on first use; :func:`service.crud.owner_salt`)."""
    keys = settings.keys
    if not keys:
        return keys
    salt = settings.owner_salt or _stored_owner_salt(settings.database_url)
    return [dataclasses.replace(key, owner=owner_id(key.secret, salt)) for key in keys]


def _stored_owner_salt(database_url: str, tries: int = 3) -> str:
    for attempt in range(tries):
        try:
            with session_scope(database_url) as session:
                stored = crud.owner_salt(session=session)
            return stored  # committed: the salt every process reads
        except ConflictError:  # another process made it at the same moment: read theirs
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")
