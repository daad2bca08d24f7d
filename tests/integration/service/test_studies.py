"""The REST service end to end: real uvicorn on a loopback port, real PostgreSQL, real Ray, real training."""

from __future__ import annotations

import time

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from service.testing.server import READ_KEY, WRITE_KEY, start_worker, wait_state
from service.testing.specs import quick_spec
from tests.conftest import unique_name


def tiny(name: str, **overrides) -> dict:
    """A study that finishes in a few seconds."""
    return quick_spec(name, budget={"n_trials": 2, "max_concurrent": 2}, workload={"epochs": 2}, **overrides)


def test_submit_runs_to_succeeded_and_leaderboard_agrees_with_optuna(server, pg_url):
    with server.client() as c:
        r = c.post("/v1/studies", json=quick_spec(unique_name("e2e"), budget={"n_trials": 6}))
        assert r.status_code == 201, r.text
        study = r.json()
        assert r.headers["location"] == f"/v1/studies/{study['id']}" and study["state"] == "QUEUED"
        study = wait_state(c, study["id"], ("SUCCEEDED", "FAILED"))
        assert study["state"] == "SUCCEEDED", study
        assert study["progress"]["finished"] == 6 and study["progress"]["running"] == 0

        board = c.get(f"/v1/studies/{study['id']}/leaderboard", params={"limit": 10}).json()
        values = [row["value"] for row in board["items"]]
        assert values == sorted(values, reverse=True) and board["direction"] == "maximize"
        assert [row["rank"] for row in board["items"]] == list(range(1, len(values) + 1))

        optuna_study = optuna.load_study(study_name=study["name"], storage=pg_url)
        complete = sorted(optuna_study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))
        assert [(row["number"], row["value"], row["params"]) for row in board["items"]] == [
            (t.number, t.value, t.params) for t in complete
        ]
        assert all(row["epochs"] == 6 for row in board["items"])
        assert study["best"]["number"] == complete[0].number

        pruned = c.get(f"/v1/studies/{study['id']}/trials", params={"state": "PRUNED"}).json()
        assert pruned["total"] >= 1 and all(t["state"] == "PRUNED" for t in pruned["items"])
        assert all(len(t["intermediate_values"]) < 6 for t in pruned["items"])
        page = c.get(f"/v1/studies/{study['id']}/trials", params={"limit": 2, "offset": 2, "curves": True}).json()
        assert page["total"] == 6 and [t["number"] for t in page["items"]] == [2, 3]
        assert "curves" in page["items"][0]["user_attrs"]
        listing = c.get("/v1/studies").json()
        assert any(s["id"] == study["id"] and s["state"] == "SUCCEEDED" for s in listing["items"])


def test_idempotency_key(server):
    spec = tiny(unique_name("idem"))
    with server.client() as c:
        first = c.post("/v1/studies", json=spec, headers={"Idempotency-Key": spec["name"]})
        again = c.post("/v1/studies", json=spec, headers={"Idempotency-Key": spec["name"]})
        other = c.post("/v1/studies", json={**spec, "seed": 5}, headers={"Idempotency-Key": spec["name"]})
        same_name = c.post("/v1/studies", json=spec)
        assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
        assert again.json()["id"] == first.json()["id"]
        assert "different spec" in other.json()["detail"]
        assert same_name.status_code == 409 and "exists" in same_name.json()["detail"]
        wait_state(c, first.json()["id"], ("SUCCEEDED",))


def test_api_keys_and_scopes(server):
    with server.client(key=None) as anon, server.client(key="not-a-real-key") as wrong:
        for client in (anon, wrong):
            r = client.get("/v1/studies")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    with server.client(key=READ_KEY) as reader:
        assert reader.get("/v1/studies").status_code == 200
        assert reader.get("/v1/search-spaces").status_code == 200
        r = reader.post("/v1/studies", json=tiny(unique_name("ro")))
        assert r.status_code == 403 and "read scope" in r.json()["detail"]
    with server.client(key=None) as anon:
        assert anon.get("/healthz").status_code == 200  # probes need no key
    assert WRITE_KEY not in server.log.read_text() and READ_KEY not in server.log.read_text()


def test_cancel_running_study_then_resume_finishes_it(server, pg_url):
    spec = quick_spec(unique_name("cancel"), budget={"n_trials": 4, "max_concurrent": 1}, scheduler={"name": "none"})
    spec["workload"]["epochs"] = 30
    with server.client() as c:
        study = c.post("/v1/studies", json=spec).json()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # wait until a trial is under way and one has finished
            s = c.get(f"/v1/studies/{study['id']}").json()
            if s["state"] == "RUNNING" and s["progress"]["complete"] >= 1 and s["progress"]["running"] >= 1:
                break
            time.sleep(0.3)
        r = c.post(f"/v1/studies/{study['id']}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"] is True
        asked = time.monotonic()
        s = wait_state(c, study["id"], ("CANCELLED",), timeout_s=30)
        assert time.monotonic() - asked < 15  # stops within seconds
        kept = s["progress"]["complete"]
        assert kept >= 1 and s["progress"]["running"] == 0
        assert c.post(f"/v1/studies/{study['id']}/cancel").status_code == 409  # nothing left to cancel

        r = c.post(f"/v1/studies/{study['id']}/resume")
        assert r.status_code == 202 and r.json()["state"] == "QUEUED"
        s = wait_state(c, study["id"], ("SUCCEEDED", "FAILED"), timeout_s=180)
        assert s["state"] == "SUCCEEDED" and s["progress"]["complete"] == 4
        optuna_study = optuna.load_study(study_name=spec["name"], storage=pg_url)
        assert not optuna_study.get_trials(states=(TrialState.RUNNING,))
        assert r.status_code == 202
        more = c.post(f"/v1/studies/{study['id']}/resume", json={"n_trials": 5})
        assert more.status_code == 202 and more.json()["spec"]["budget"]["n_trials"] == 5
        s = wait_state(c, study["id"], ("SUCCEEDED", "FAILED"), timeout_s=180)
        assert s["state"] == "SUCCEEDED" and s["progress"]["complete"] == 5
        assert c.post(f"/v1/studies/{study['id']}/resume", json={"n_trials": 3}).status_code == 409


def test_two_more_workers_never_run_the_same_study(server, pg_url, tmp_path):
    workers = [start_worker(pg_url, tmp_path, f"extra{i}") for i in range(2)]
    try:
        with server.client() as c:
            time.sleep(3)  # let the extra workers register and reach the queue
            ids = [c.post("/v1/studies", json=tiny(unique_name(f"many{i}"))).json()["id"] for i in range(5)]
            done = [wait_state(c, i, ("SUCCEEDED", "FAILED"), timeout_s=240) for i in ids]
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
    assert all(s["state"] == "SUCCEEDED" for s in done)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT name, claims, worker_id FROM tvlars_studies WHERE id = ANY(:ids)"), {"ids": ids}
        ).all()
    engine.dispose()
    assert all(claims == 1 for _, claims, _ in rows), rows  # each study was claimed (and run) exactly once
    assert len({worker for _, _, worker in rows}) >= 2, rows  # the work was shared
    for s in done:
        trials = optuna.load_study(study_name=s["name"], storage=pg_url).get_trials()
        assert len(trials) == 2  # no study ran twice


def test_readyz_and_metrics(server):
    with server.client(key=None) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["workers"] >= 1
        text = c.get("/metrics").text
    assert 'tvlars_studies{state="SUCCEEDED"}' in text
    assert 'tvlars_trials{state="COMPLETE"}' in text
    assert 'tvlars_http_request_duration_seconds_bucket{le="0.05",method="GET",route="/readyz",status="200"}' in text
