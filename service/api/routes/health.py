"""Liveness, readiness (database and a live worker) and Prometheus metrics."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...core.db import session_scope
from ...crud import live_workers
from ..deps import SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up. ``async``: it never waits for a threadpool thread, so it answers while every thread is busy
    (a liveness probe that queued behind a burst of requests would get a busy API process restarted)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable or no live worker"}})
def readyz(settings: SettingsDep) -> JSONResponse:
    """Ready when the database answers and at least one worker heartbeated recently."""
    body: dict = {"database": "ok", "workers": 0}
    try:
        with session_scope(settings.database_url) as s:
            s.execute(sa.text("SELECT 1"))
            body["workers"] = live_workers(session=s, stale_after_s=settings.worker_stale_s)
    except Exception as e:
        body["database"] = f"unreachable: {type(e).__name__}"
    ready = body["database"] == "ok" and body["workers"] > 0
    body["status"] = "ready" if ready else "not ready"
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics: studies and trials by state, request latency."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
