"""Prometheus metrics of one app: request latency (middleware) and studies/trials by state (read at scrape)."""

from __future__ import annotations

import time

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send

from .core.db import session_scope
from .models import StudyRecord, StudyState
from .optuna_queries import TRIAL_STATES, trials

__all__ = ["AppMetrics", "MetricsMiddleware"]


class _StateCollector:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self):
        studies = GaugeMetricFamily("tvlars_studies", "Studies by state", labels=["state"])
        trial_gauge = GaugeMetricFamily("tvlars_trials", "Trials (all studies) by state", labels=["state"])
        try:
            with session_scope(self.database_url) as s:
                by_state = dict(
                    s.execute(sa.select(StudyRecord.state, sa.func.count()).group_by(StudyRecord.state)).all()
                )
                try:
                    rows = s.execute(
                        sa.select(sa.cast(trials.c.state, sa.String), sa.func.count()).group_by(trials.c.state)
                    )
                    trial_states = {str(k): v for k, v in rows}
                except sa.exc.SQLAlchemyError:  # no Optuna tables yet: no study has started
                    s.rollback()
                    trial_states = {}
        except Exception:
            return  # the scrape still answers (latency metrics); readyz reports the database
        for state in StudyState:
            studies.add_metric([state.value], by_state.get(state.value, 0))
        for state in TRIAL_STATES:
            trial_gauge.add_metric([state], trial_states.get(state, 0))
        yield studies
        yield trial_gauge


class AppMetrics:
    def __init__(self, database_url: str) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "tvlars_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.requests = Counter(
            "tvlars_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.registry.register(_StateCollector(database_url))


class MetricsMiddleware:
    """Times every HTTP request, labelled by route template (not raw path: ids would explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            labels = (scope["method"], label, str(status["code"]))
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
            self.metrics.requests.labels(*labels).inc()
