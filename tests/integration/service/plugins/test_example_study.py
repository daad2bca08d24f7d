"""The example plugin end to end: its study spec through the real server (uvicorn), worker, engine and Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from search_spaces import merge
from service.testing.server import READ_KEY, wait_state
from tests.conftest import unique_name
from tests.utils.plugins import EXAMPLE

SPEC = yaml.safe_load((EXAMPLE / "study.yaml").read_text())


def _run(server, name: str, epochs: int, n_trials: int, **workload) -> tuple[dict, list[dict]]:
    """The example spec, smaller (no pruning), run to its end through the server: the study and its trials."""
    spec = merge(SPEC, {"name": unique_name(name), "workload": {"epochs": epochs, **workload}})
    spec["scheduler"] = {"name": "none"}
    spec["budget"] = {"n_trials": n_trials, "max_concurrent": 2, "max_failed": 0}
    with server.client() as c:
        r = c.post("/v1/studies", json=spec)
        assert r.status_code == 201, r.text
        study = wait_state(c, r.json()["id"], ("SUCCEEDED", "FAILED"), timeout_s=240)
        return study, c.get(f"/v1/studies/{study['id']}/trials", params={"curves": True}).json()["items"]


def test_a_study_on_the_plugin_workload_succeeds_with_curves(server):
    study, trials = _run(server, "rings", epochs=3, n_trials=3)
    assert study["state"] == "SUCCEEDED", study
    assert [t["state"] for t in trials] == ["COMPLETE"] * 3
    for t in trials:
        curves = t["user_attrs"]["curves"]
        assert curves["epoch"] == [1, 2, 3] and len(curves["val_acc"]) == 3
        assert all(0.0 <= v <= 1.0 for v in curves["val_acc"])
    assert study["best"]["value"] > 0.3  # 4 balanced classes: better than chance


def test_a_plugin_whose_load_raises_fails_the_trial_with_its_message(server):
    # accepted at submit (options are checked by name; values are the loader's business), refused by the loader
    study, trials = _run(server, "rings-bad", epochs=2, n_trials=2, dataset_options={"label_noise": 2.0})
    assert study["state"] == "FAILED", study
    assert trials and all(t["state"] == "FAIL" for t in trials)  # max_failed 0: the first error ends the study
    reasons = [t["user_attrs"]["fail_reason"] for t in trials]
    assert any("Invalid label_noise: 2.0 (a fraction in [0, 1))" in r for r in reasons), reasons


def test_cli_workloads_lists_the_plugin_from_the_server(server):
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "workloads", "--url", server.url, "--api-key", READ_KEY],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stderr
    rows = {tuple(c.strip() for c in line.split("│")[1:4]) for line in done.stdout.splitlines() if "│" in line}
    assert ("dataset", "rings", "tvlars-example-workloads 0.1.0") in rows
    assert ("model", "resmlp", "tvlars-example-workloads 0.1.0") in rows
    assert ("dataset", "mnist1d", "built-in") in rows
    assert ("optimizer", "lars_warmup (LARS + recipe)", "built-in") in rows
