"""The doors of real served processes: ``tvlars-tune dashboard`` (optuna-dashboard behind Basic auth and read-only
with keys; loopback names and no cross-site write without), on SQLite. The API served by plain ``uvicorn --factory``
is in tests/integration/service/test_served_doors.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import optuna
import pytest

from service._optuna import open_storage
from service.core.db import dispose
from service.testing.server import READ_KEY, REPO, WRITE_KEY, free_port

KEYS = f"{WRITE_KEY}:write,{READ_KEY}:read"


def env_for(database_url: str, api_keys: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TVLARS_DATABASE_URL": database_url, "TVLARS_API_KEYS": api_keys}


@contextmanager
def served(args: list[str], env: dict[str, str], log: Path, url: str) -> Iterator[subprocess.Popen]:
    """``args`` in a subprocess until ``url``/healthz answers 200 (within 120 s: a loaded 2-core machine imports
    slowly); stopped on exit."""
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not answering:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def db_with_a_study(tmp_path) -> Iterator[str]:
    """A SQLite database holding one Optuna study, ``kept``, with one finished trial."""
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="kept")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    yield url
    dispose(url)


@contextmanager
def dashboard(database_url: str, api_keys: str, log: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "service.cli", "dashboard", "--port", str(port)]
    with served(args, env_for(database_url, api_keys), log, url):
        yield url


def study_names(database_url: str) -> list[str]:
    return optuna.get_all_study_names(storage=open_storage(database_url))


def test_the_dashboard_with_keys_asks_for_a_key_as_the_password_and_is_read_only(db_with_a_study, tmp_path):
    with dashboard(db_with_a_study, KEYS, tmp_path / "dashboard.log") as url:
        anonymous = httpx.get(f"{url}/api/studies")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith('Basic realm="tvlars-tune dashboard"')
        assert "API key" in anonymous.json()["detail"]
        for auth in (("anyone", "wrong-key-0123456789"), ("anyone", ""), (READ_KEY, "x")):
            assert httpx.get(f"{url}/api/studies", auth=auth).status_code == 401, auth
        bearer = httpx.get(f"{url}/api/studies", headers={"Authorization": f"Bearer {READ_KEY}"})
        assert bearer.status_code == 401  # Basic only: what a browser sends once asked

        studies = httpx.get(f"{url}/api/studies", auth=("anyone", READ_KEY))  # any user name, a read key
        assert studies.status_code == 200
        (summary,) = studies.json()["study_summaries"]
        assert summary["study_name"] == "kept"
        page = httpx.get(f"{url}/dashboard/", auth=("me", READ_KEY))
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key, and get nothing else

        study = summary["study_id"]
        for key in (READ_KEY, WRITE_KEY):
            for method, path, body in [
                ("DELETE", f"/api/studies/{study}", None),
                ("POST", "/api/studies", {"study_name": "planted", "directions": ["minimize"]}),
                ("POST", f"/api/studies/{study}/rename", {"study_name": "renamed"}),
                ("PUT", f"/api/studies/{study}/note", {"version": 0, "body": "defaced"}),
            ]:
                r = httpx.request(method, f"{url}{path}", json=body, auth=("anyone", key))
                assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD", (method, path)
                assert "read-only" in r.json()["detail"]
        assert httpx.delete(f"{url}/api/studies/{study}").status_code == 401
    assert study_names(db_with_a_study) == ["kept"]  # still there, under its name


def test_the_dashboard_without_keys_answers_loopback_names_and_no_cross_site_write(db_with_a_study, tmp_path):
    with dashboard(db_with_a_study, "", tmp_path / "dashboard.log") as url:
        studies = httpx.get(f"{url}/api/studies")
        assert studies.status_code == 200
        study = studies.json()["study_summaries"][0]["study_id"]
        rebound = httpx.get(f"{url}/api/studies", headers={"Host": "attacker.example"})  # DNS rebinding
        assert rebound.status_code == 403 and "127.0.0.1" in rebound.json()["detail"]
        r = httpx.delete(f"{url}/api/studies/{study}", headers={"Host": "attacker.example"})
        assert r.status_code == 403
        r = httpx.delete(f"{url}/api/studies/{study}", headers={"Origin": "https://attacker.example"})
        assert r.status_code == 403 and "Cross-site write refused" in r.json()["detail"]
    assert study_names(db_with_a_study) == ["kept"]


def test_the_dashboard_refuses_a_public_bind_without_keys(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "dashboard", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO,
        env=env_for(f"sqlite:///{tmp_path / 'x.db'}", ""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "refusing to bind 0.0.0.0 without API keys" in out.stderr
    assert "TVLARS_API_KEYS" in out.stderr
