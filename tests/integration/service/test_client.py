"""service.client.Client end to end against the real server (uvicorn, a worker, Ray, PostgreSQL): a study submitted,
waited on with a progress callback, its leaderboard; a small comparison's result."""

from __future__ import annotations

from service.client import Client
from service.testing.server import WRITE_KEY
from service.testing.specs import quick_spec, smallest_comparison
from tests.conftest import unique_name
from tests.integration.service.test_cli_dashboard import cli


def test_submit_wait_leaderboard(server):
    with Client(server.url, api_key=WRITE_KEY) as client:
        spec = quick_spec(unique_name("client"), budget={"n_trials": 3, "max_concurrent": 2}, workload={"epochs": 2})
        study = client.studies.submit(spec)
        seen: list[dict] = []
        done = client.studies.wait(study["id"], timeout=240, on_progress=seen.append, poll_s=0.2)
        assert done["state"] == "SUCCEEDED" and done["progress"]["finished"] == 3, done
        assert seen[0]["state"] in ("QUEUED", "RUNNING") and seen[-1] == done
        finished = [s["progress"]["finished"] for s in seen]
        assert finished == sorted(finished)  # progress only goes forward
        board = client.studies.leaderboard(study["id"], limit=2, include_pruned=True)["items"]
        assert len(board) == 2 and board[0]["state"] == "COMPLETE" and [r["rank"] for r in board] == [1, 2]
        assert board[0]["number"] == done["best"]["number"] and set(board[0]["params"]) == {"lr", "lam"}
        assert client.studies.trials(study["id"])["total"] == 3


def test_a_comparison_result(server):
    with Client(server.url, api_key=WRITE_KEY) as client:
        comparison = client.comparisons.submit(smallest_comparison(unique_name("client-cmp")))
        done = client.comparisons.wait(comparison["id"], timeout=300, poll_s=0.5)
        assert done["state"] == "SUCCEEDED", done["error"]
        result = client.comparisons.result(done["id"])
        assert {a["label"] for a in result["arms"]} == {"tvlars", "lamb"}
        assert all(len(a["reruns"]) == 2 for a in result["arms"])
        assert "<html" in client.comparisons.report(done["id"]).lower()


def test_the_cli_workloads_view(server):
    out = cli(server, "workloads")
    assert out.returncode == 0, out.stderr
    assert "mnist1d" in out.stdout and "tvlars" in out.stdout and "built-in" in out.stdout
