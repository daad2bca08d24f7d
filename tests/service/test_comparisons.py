"""A comparison end to end over the real server (uvicorn, a worker, Ray, PostgreSQL) on a tiny budget: equal epoch
budgets counted from storage, re-runs on fresh seeds shared by every arm, the re-run numbers and verdicts from the
stored trials, the HTML report in headless Chromium, and `tvlars-tune report`'s files."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from search_spaces.comparison import RERUN_SEED_BASE, ComparisonSpec, rerun_seeds
from service._optuna import open_storage
from service.comparisons.report import PLOTS, format_summary
from service.comparisons.stats import MIN_REPEATS, bootstrap_mean
from service.engine.searcher import trial_epochs

from ..conftest import unique_name
from ..utils.comparisons import chromium, rendered_image_widths
from ..utils.server import REPO, WRITE_KEY, service_env

TINY = {
    "workload": {"task": "classification", "dataset": "mnist1d", "model": "mlp", "epochs": 2},
    "arms": [{"optimizer": "tvlars"}, {"optimizer": "lamb", "lr_center": 0.03}],
    "batch_sizes": [1000, 3000],
    "budget": {"n_trials": 2, "max_concurrent": 1, "max_failed": 1},  # one Ray actor per study, reused
    "sampler": {"name": "random", "seed": 0},
    "scheduler": {"name": "none"},
    "rerun": {"top_k": 1, "seeds": 2},
    "range_check": "flag",  # no extension studies: one tuning and one re-run study per arm
}


def _wait(client, comparison_id: str, timeout_s: float = 480) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c = client.get(f"/v1/comparisons/{comparison_id}").json()
        if c["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return c
        time.sleep(0.5)
    raise AssertionError(f"comparison still {c['state']} ({c['phase']}) after {timeout_s} s")


def test_a_tiny_comparison_end_to_end(server, pg_url, tmp_path):
    name = unique_name("cmp")
    with server.client() as client:
        r = client.post("/v1/comparisons", json={**TINY, "name": name})
        assert r.status_code == 201, r.text
        c = _wait(client, r.json()["id"])
        assert c["state"] == "SUCCEEDED" and c["phase"] == "done", c["error"]
        studies = {s["id"]: s for s in client.get("/v1/studies", params={"limit": 500}).json()["items"]}
        page = client.get(f"/v1/comparisons/{c['id']}/report")
    spec = ComparisonSpec.model_validate({**TINY, "name": name})
    storage = open_storage(pg_url)
    seeds = rerun_seeds(spec)
    assert seeds == [RERUN_SEED_BASE, RERUN_SEED_BASE + 1]
    assert len(c["arms"]) == 4
    for arm in c["arms"]:
        tune_id, rerun_id = arm["studies"]
        tune = optuna.load_study(study_name=studies[tune_id]["name"], storage=storage)
        rerun = optuna.load_study(study_name=studies[rerun_id]["name"], storage=storage)
        # equal budgets, counted from storage: every tuning trial's epochs, whatever its state
        tuned = [t for t in tune.get_trials() if t.state.is_finished()]
        assert arm["epochs_spent"] == sum(trial_epochs(t) for t in tuned) <= arm["epochs_budget"] == 2 * 2
        assert studies[tune_id]["spec"]["budget"]["epochs"] == 4
        # re-runs: fresh seeds (never a tuning seed), the same in every arm, the tuned config, never pruned
        tuning_seeds = {spec.seed + t.number for t in tune.get_trials()}
        reruns = rerun.get_trials(states=(TrialState.COMPLETE,))
        assert sorted(spec_seed(studies[rerun_id], t) for t in reruns) == seeds
        assert not set(seeds) & tuning_seeds
        best = max((t for t in tuned if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
        assert all(t.params == best.params for t in reruns) and arm["best_params"] == best.params
        assert all(len(t.intermediate_values) == 2 for t in reruns)  # full epochs
        # the re-run numbers are the stored re-run trials' test accuracy at best validation, summarised
        assert arm["rerun"] == bootstrap_mean({0: {RERUN_SEED_BASE + t.number: t.value for t in reruns}}).to_dict()
    assert set(c["verdicts"]) == {"1000", "3000"}
    for rows in c["verdicts"].values():
        (row,) = rows
        assert (row["arm"], row["against"]) == ("tvlars", "lamb")
        # one tuning repeat estimates no tuning variance: the rule cannot be checked, and the verdict says why
        assert row["verdict"] == "inconclusive" and row["difference"] is None
        assert f"1 tuning repeat(s) with re-runs; a verdict needs ≥ {MIN_REPEATS}" in row["reason"]

    # the HTML report: every plot inline, and rendered by a browser where one is installed
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("data:image/png;base64,") == len(PLOTS)
    if chromium() is not None:
        _assert_renders(page.text, tmp_path)

    # `tvlars-tune report` writes Markdown + PNGs holding the stored numbers
    env = service_env(pg_url) | {"TVLARS_URL": server.url, "TVLARS_API_KEY": WRITE_KEY}
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "report", c["id"], "--out", str(tmp_path / "md")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "md" / "report.md").read_text()
    assert all((tmp_path / "md" / f"{key}.png").stat().st_size > 1000 for key in PLOTS)
    for arm in c["arms"]:
        assert format_summary(summarize_from(arm)) in md


def spec_seed(study: dict, trial: optuna.trial.FrozenTrial) -> int:
    """The seed a trial trained with: the study spec's seed + trial number (vary_seed)."""
    assert study["spec"]["vary_seed"]
    return study["spec"]["seed"] + trial.number


def summarize_from(arm: dict):
    from service.comparisons.stats import Summary

    return Summary(**arm["rerun"])


def _assert_renders(page: str, tmp_path) -> None:
    widths = rendered_image_widths(page, tmp_path)
    assert len(widths) == len(PLOTS) and all(w > 200 for w in widths), widths
