"""The CLI against a live server, optuna-dashboard on the same storage, and a schemathesis run over the API (the CLI's
refusals without a server: tests/unit/service/test_cli_dashboard.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from service.testing.server import READ_KEY, REPO, WRITE_KEY, free_port, service_env, start_server
from service.testing.specs import quick_spec
from tests.conftest import unique_name


def cli(server, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**service_env("sqlite://"), "TVLARS_URL": server.url, "TVLARS_API_KEY": WRITE_KEY, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_submit_wait_status_leaderboard(server, tmp_path):
    spec = quick_spec(unique_name("cli"), budget={"n_trials": 3}, workload={"epochs": 3})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = cli(server, "submit", str(path), "--wait")
    assert out.returncode == 0, out.stderr
    assert "SUCCEEDED" in out.stdout and f"{spec['name']}: best val_acc" in out.stdout
    assert "3/3" in out.stdout  # the progress bar's trials finished / n_trials
    study_id = out.stdout.split(" id ")[1].split(":")[0].strip()
    status = cli(server, "status", study_id)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout and "3/3 finished" in status.stdout
    board = cli(server, "leaderboard", study_id, "--limit", "2")
    assert board.returncode == 0 and "rank" in board.stdout and "lr" in board.stdout
    assert "best val" in board.stdout and "test @ best val" in board.stdout and "COMPLETE" in board.stdout
    again = cli(server, "cancel", study_id)
    assert again.returncode == 1 and "409" in again.stderr  # a finished study cannot be cancelled: a clear error
    missing = cli(server, "status", "no-such-id")
    assert missing.returncode == 1 and "404" in missing.stderr and "Study not found" in missing.stderr
    bad = cli(server, "submit", "--preset", "mnist1d-quick", "--set", json.dumps({"budget": {"n_trials": 0}}))
    assert bad.returncode == 1 and "budget.n_trials" in bad.stderr
    presets = cli(server, "presets")
    assert presets.returncode == 0 and "mnist1d-quick" in presets.stdout


def test_dashboard_lists_the_studies(server, pg_url):
    with server.client() as c:
        study = c.post(
            "/v1/studies", json=quick_spec(unique_name("dash"), budget={"n_trials": 1}, workload={"epochs": 1})
        )
        name = study.json()["name"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/studies/{study.json()['id']}").json()["state"] == "QUEUED" and time.monotonic() < deadline:
            time.sleep(0.3)  # the Optuna study exists once a worker has started it
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dashboard", "--port", str(port)],
        cwd=REPO,
        env=service_env(pg_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                # the server has keys: the dashboard asks for one as the Basic password
                r = httpx.get(f"http://127.0.0.1:{port}/api/studies", auth=("me", READ_KEY), timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not start"
            time.sleep(0.3)
        names = [s["study_name"] for s in r.json()["study_summaries"]]
        assert name in names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"http://127.0.0.1:{port}/dashboard/" in proc.stdout.read()


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory):
    """A server with no worker (studies stay QUEUED), on SQLite: schemathesis may create any study it likes."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    srv = start_server(f"sqlite:///{tmp / 'st.db'}", tmp, workers=0, ready=False)
    yield srv
    srv.stop()


def test_schemathesis_finds_no_server_errors(idle_server, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{idle_server.url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--header",
            f"Authorization: Bearer {WRITE_KEY}",
            "--seed",
            "1",
            # /readyz answers 503 by design here (no worker): tests/integration/service/test_studies.py checks it
            # with one
            "--exclude-path",
            "/readyz",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
