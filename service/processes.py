"""The service's processes, as the CLI starts them: the API with its workers, a worker alone, optuna-dashboard on
the same storage, and a whole server in a subprocess (the demo's)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .core.config import Settings

__all__ = ["free_port", "run_api", "run_dashboard", "run_worker", "safe_url", "server_subprocess"]

_CLI = [sys.executable, "-m", "service.cli"]


def safe_url(settings: Settings) -> str:
    """The database URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


def run_api(settings: Settings, host: str, port: int, workers: int, api_processes: int) -> None:
    """Migrate, start ``workers`` worker processes, serve the API until stopped, then stop the workers."""
    import uvicorn

    from ._optuna import open_storage
    from .core.db import migrate
    from .main import create_app

    migrate(settings.database_url)
    open_storage(settings.database_url)
    procs = [subprocess.Popen([*_CLI, "worker"], env=os.environ.copy()) for _ in range(workers)]
    # uvicorn re-raises the SIGTERM it shut down on; with the default handler that would end this process before
    # the `finally` below stops the workers, leaving them running with no parent
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if api_processes > 1:  # each process builds the app from the same environment
            uvicorn.run(
                "service.main:create_app",
                factory=True,
                host=host,
                port=port,
                workers=api_processes,
                log_level="warning",
            )
        else:
            uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_worker(settings: Settings) -> None:
    """A worker in this process, logging to stderr, until SIGTERM/SIGINT."""
    from .worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("optuna", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    Worker(settings).run(handle_signals=True)


def run_dashboard(settings: Settings, host: str, port: int) -> None:
    """optuna-dashboard on the service's storage, behind :class:`service.dashboard.DashboardGuard`, until stopped
    (bottle's wsgiref server, as optuna-dashboard's own ``run_server``)."""
    from bottle import run

    from .dashboard import dashboard_app

    run(dashboard_app(settings), host=host, port=port)


@contextmanager
def server_subprocess(port: int) -> Iterator[subprocess.Popen]:
    """``tvlars-tune serve`` on ``port`` in a subprocess (stderr piped, for its last words), stopped on exit."""
    proc = subprocess.Popen(
        [*_CLI, "serve", "--port", str(port)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
