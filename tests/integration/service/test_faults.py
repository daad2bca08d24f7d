"""Faults with real processes: PostgreSQL stopped mid-study (on a private server, so nothing else is harmed), the API
killed with SIGKILL, a study name held by an Optuna study the service did not create.

The API (``tvlars-tune serve --workers 0``) and a worker (``tvlars-tune worker``) run as separate processes, the
worker joining the session's Ray. Outages last ``OUTAGE_S`` (8 s): long enough for every retry path to fire several
times (back-off 0.5 → 5 s) and the study heartbeat to look stale, short enough for CI; the promise does not depend
on the length up to ``TVLARS_DB_OUTAGE_RETRY_S`` (600 s by default).
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import optuna
import pytest

from service.testing.server import Server, start_server, start_worker, wait_state, wait_until
from service.testing.specs import quick_spec
from tests.conftest import unique_name

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_address")]

OUTAGE_S = 8.0
#: What the API promises while the database is down: an answer (503 JSON) within this many seconds.
ANSWER_WITHIN_S = 5.0


def _trials(c: httpx.Client, study_id: str) -> list[dict]:
    r = c.get(f"/v1/studies/{study_id}/trials", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _finished(trials: list[dict]) -> dict[int, tuple[str, list | None]]:
    return {t["number"]: (t["state"], t["values"]) for t in trials if t["state"] in ("COMPLETE", "PRUNED")}


def _expect_503_while_down(api: Server, study_id: str, seconds: float) -> int:
    """Poll the API's reads and a write for ``seconds``: every answer a 503 JSON with Retry-After, within 5 s."""
    calls = [
        ("GET", f"/v1/studies/{study_id}", None),
        ("GET", f"/v1/studies/{study_id}/leaderboard", None),
        ("GET", f"/v1/studies/{study_id}/trials", None),
        ("GET", "/v1/studies", None),
        ("POST", "/v1/studies", quick_spec(unique_name("down"))),
    ]
    deadline, n = time.monotonic() + seconds, 0
    with api.client() as c:
        while time.monotonic() < deadline:
            method, path, body = calls[n % len(calls)]
            t = time.monotonic()
            r = c.request(method, path, json=body)
            elapsed = time.monotonic() - t
            assert r.status_code == 503, f"{method} {path}: {r.status_code} {r.text}"
            assert elapsed < ANSWER_WITHIN_S, f"{method} {path} took {elapsed:.1f} s"
            assert r.json()["detail"] == "The database is unavailable; retry shortly"
            assert int(r.headers["Retry-After"]) > 0
            n += 1
            time.sleep(0.2)
        t = time.monotonic()
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["database"].startswith("unreachable")
        assert time.monotonic() - t < ANSWER_WITHIN_S
    return n


def _alive(*procs) -> None:
    for p in procs:
        assert p.poll() is None, f"process {p.args} died with {p.returncode}"


def test_api_answers_503_json_within_seconds_while_the_database_is_down(fault_db, outage, tmp_path):
    api = start_server(fault_db, tmp_path, workers=0, ready=False)
    try:
        with api.client() as c:
            study = c.post("/v1/studies", json=quick_spec(unique_name("api"))).json()
        with outage():
            assert _expect_503_while_down(api, study["id"], OUTAGE_S) >= 5
        _alive(api.proc)
        with api.client() as c:  # the same study, as before: nothing was written while the database was down
            again = c.get(f"/v1/studies/{study['id']}")
            assert again.status_code == 200 and again.json()["state"] == "QUEUED"
            assert c.get("/v1/studies").json()["total"] == 1
    finally:
        api.stop()


def test_a_study_survives_outages_during_a_trials_reports_and_between_trials(fault_db, outage, tmp_path):
    api = start_server(fault_db, tmp_path, workers=0, ready=False)
    worker = start_worker(fault_db, tmp_path, "outages")
    spec = quick_spec(
        unique_name("out"),
        budget={"n_trials": 4, "max_concurrent": 1},
        scheduler={"name": "none"},
        workload={"epochs": 8},
    )
    try:
        with api.client() as c:
            study_id = c.post("/v1/studies", json=spec).json()["id"]
            # 1: while the first trial reports its epochs (the searcher records each one)
            wait_until(
                lambda: any(t["state"] == "RUNNING" and t["intermediate_values"] for t in _trials(c, study_id)),
                120,
                "the first trial's first epoch",
            )
            before_first = _finished(_trials(c, study_id))
            with outage():
                _expect_503_while_down(api, study_id, OUTAGE_S)
                _alive(api.proc, worker)
            # 2: as soon as a trial has finished, when the searcher tells it and asks for the next one
            wait_until(lambda: len(_finished(_trials(c, study_id))) > len(before_first), 120, "a trial to finish")
            before_second = _finished(_trials(c, study_id))
            with outage():
                _expect_503_while_down(api, study_id, OUTAGE_S)
                _alive(api.proc, worker)
            done = wait_state(c, study_id, ("SUCCEEDED", "FAILED"), timeout_s=240)
            assert done["state"] == "SUCCEEDED", done["error"]
            after = _finished(_trials(c, study_id))
        assert before_second.items() <= after.items(), "a finished trial changed or was lost"
        assert len(after) == 4 and done["progress"]["failed"] == 0
        _alive(api.proc, worker)
        log = (tmp_path / "worker-outages.log").read_text()
        assert "database unavailable" in log  # the engine's storage calls met the outage, and waited
        assert "tuning run failed" not in log
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        api.stop()


def test_a_worker_waits_out_an_outage_to_claim_a_study_and_record_its_end(fault_db, outage, private_pg, tmp_path):
    api = start_server(fault_db, tmp_path, workers=0, ready=False)
    spec = quick_spec(unique_name("claim"), budget={"n_trials": 2, "max_concurrent": 1}, workload={"epochs": 2})
    worker = None
    try:
        with api.client() as c:
            first = c.post("/v1/studies", json=spec).json()["id"]
        with outage():  # the worker starts while the database is down: it waits, then claims the queued study
            worker = start_worker(fault_db, tmp_path, "claim")
            time.sleep(OUTAGE_S)
            _alive(worker)
        with api.client() as c:
            done = wait_state(c, first, ("SUCCEEDED", "FAILED"), timeout_s=180)
            assert done["state"] == "SUCCEEDED", done["error"]
            # the outage begins as the study's last trial is told: the engine sums up the run and the worker
            # records the study's end, both through the outage
            second = c.post("/v1/studies", json={**spec, "name": unique_name("finish")}).json()["id"]
            wait_until(lambda: len(_finished(_trials(c, second))) == 2, 180, "the second study's last trial")
        with outage():
            time.sleep(OUTAGE_S)
            _alive(worker, api.proc)
        with api.client() as c:
            done = wait_state(c, second, ("SUCCEEDED", "FAILED"), timeout_s=60)
            assert done["state"] == "SUCCEEDED", done["error"]
            assert done["progress"]["finished"] == 2
        _alive(worker)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        api.stop()


def test_the_study_goes_on_when_the_api_is_killed_and_a_restarted_api_shows_it(fault_db, tmp_path):
    api = start_server(fault_db, tmp_path, workers=0, ready=False)
    worker = start_worker(fault_db, tmp_path, "api-kill")
    spec = quick_spec(unique_name("kill"), budget={"n_trials": 4, "max_concurrent": 1}, scheduler={"name": "none"})
    try:
        with api.client() as c:
            study_id = c.post("/v1/studies", json=spec).json()["id"]
            wait_until(lambda: len(_finished(_trials(c, study_id))) >= 1, 120, "a first finished trial")
            seen = _finished(_trials(c, study_id))
        os.kill(api.proc.pid, signal.SIGKILL)
        api.proc.wait(timeout=10)
        # the worker needs no API: trials go on finishing in the database meanwhile
        storage = optuna.storages.RDBStorage(fault_db)
        study = optuna.load_study(study_name=spec["name"], storage=storage)
        wait_until(
            lambda: len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]) > len(seen),
            120,
            "a trial to finish with the API dead",
        )
        storage.engine.dispose()
        _alive(worker)
        api = start_server(fault_db, tmp_path, workers=0, ready=False)
        with api.client() as c:
            now = c.get(f"/v1/studies/{study_id}").json()
            assert now["state"] in ("RUNNING", "SUCCEEDED")
            assert seen.items() <= _finished(_trials(c, study_id)).items()
            done = wait_state(c, study_id, ("SUCCEEDED", "FAILED"), timeout_s=180)
            assert done["state"] == "SUCCEEDED", done["error"]
            assert done["progress"]["finished"] == 4
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        api.stop()


def test_a_name_held_by_a_foreign_optuna_study_fails_the_study_at_once(fault_db, tmp_path):
    name = unique_name("foreign")
    optuna.create_study(study_name=name, storage=fault_db)  # made by someone else, straight in Optuna
    api = start_server(fault_db, tmp_path, workers=0, ready=False)
    worker = start_worker(fault_db, tmp_path, "foreign")
    try:
        with api.client() as c:
            study_id = c.post("/v1/studies", json=quick_spec(name)).json()["id"]
            done = wait_state(c, study_id, ("SUCCEEDED", "FAILED"), timeout_s=120)
            assert done["state"] == "FAILED"
            assert f"Study {name!r} exists with a different spec" in done["error"]
            time.sleep(3)  # ...and it stays FAILED: never requeued
            assert c.get(f"/v1/studies/{study_id}").json()["state"] == "FAILED"
        _alive(worker)
        assert optuna.load_study(study_name=name, storage=fault_db).trials == []  # the foreign study is untouched
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        api.stop()
