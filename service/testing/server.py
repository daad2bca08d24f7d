"""Real servers for tests and benchmarks: `tvlars-tune serve` (uvicorn + workers) and workers alone, as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
WRITE_KEY = "write-key-0123456789"
READ_KEY = "read-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TVLARS_DATABASE_URL": database_url,
        "TVLARS_API_KEYS": f"{WRITE_KEY}:write,{READ_KEY}:read",
        "TVLARS_WORKER_HEARTBEAT_S": "0.5",
        "TVLARS_WORKER_POLL_S": "0.2",
        "TVLARS_WORKER_STALE_S": "5",
    }
    env.update(extra)
    return env


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def client(self, key: str | None = WRITE_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(
    database_url: str, log_dir: Path, workers: int = 1, ready: bool = True, api_processes: int = 1, **env: str
) -> Server:
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    args = ["serve", "--port", str(port), "--workers", str(workers), "--api-processes", str(api_processes)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO,
        env=service_env(database_url, **env),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    wait_for(server, "/readyz" if ready else "/healthz", timeout_s=90)
    return server


def start_worker(database_url: str, log_dir: Path, name: str, **env: str) -> subprocess.Popen:
    log = log_dir / f"worker-{name}.log"
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker"],
        cwd=REPO,
        env=service_env(database_url, **env),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_for(server: Server, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log.read_text()[-4000:]}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{server.url}{path} not ready after {timeout_s} s:\n{server.log.read_text()[-4000:]}")


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    """``predicate()``'s first truthy value, polled every ``poll_s`` for up to ``timeout_s``; else ``TimeoutError``
    naming ``what`` it waited for."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def wait_state(client: httpx.Client, study_id: str, states: tuple[str, ...], timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        study = client.get(f"/v1/studies/{study_id}").json()
        if study["state"] in states:
            return study
        time.sleep(0.3)
    raise TimeoutError(f"study {study_id} still {study['state']} after {timeout_s} s")
