"""A comparison end to end over the real server (uvicorn, a worker, Ray, PostgreSQL) on a small compare-quick: its
plan first (a dry run: nothing stored), then equal spending counted from storage inside the planned [min, max],
reference points first in every arm, each trial's seed stored on it, re-runs of each repeat's winner on fresh seeds
nested in the repeat and shared by every arm, verdicts, a second plan's wall time from the stored epoch times
against the real run's, the HTML report in headless Chromium, and `tvlars-tune report`'s files."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces.comparison import RERUN_SEED_BASE, load_comparison_preset, rerun_seeds
from service._optuna import open_storage
from service.comparisons.report import PLOTS, format_summary
from service.core.db import session_scope
from service.models import StudyRecord
from service.optuna_queries import trial_epochs
from service.testing.server import REPO, WRITE_KEY, service_env
from service.trial_report import TrialAttr
from tests.conftest import unique_name
from tests.utils.comparisons import chromium, rendered_image_widths

#: compare-quick, smaller: 2 arms × 1 batch size × 2 tuning repeats of 2 full 3-epoch trials, range check flagging
#: only.
TINY = {
    "preset": "compare-quick",
    "workload": {"epochs": 3, "dataset_options": {"num_samples": 2000}},
    "batch_sizes": [1024],
    "budget": {"epochs": 6, "max_failed": 1},
    "tuning_repeats": 2,
    "range_check": "flag",  # extensions: tests/unit/service/comparisons/test_range_check.py (this run stays small)
    "rerun": {"top_k": 1, "seeds": 2},
}


def _wait(client, comparison_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c = client.get(f"/v1/comparisons/{comparison_id}").json()
        if c["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return c
        time.sleep(0.5)
    raise AssertionError(f"comparison still {c['state']} ({c['phase']}) after {timeout_s} s")


@pytest.mark.timeout(900)  # ~12 studies, each a Ray Tune run on one worker
def test_a_small_compare_quick_end_to_end(server, pg_url, tmp_path):
    name = unique_name("cmp")
    with server.client() as client:
        before = client.get("/v1/studies", params={"limit": 1}).json()["total"]
        plan = client.post("/v1/comparisons", json={**TINY, "name": name, "dry_run": True})
        assert plan.status_code == 200, plan.text
        plan = plan.json()
        assert client.get("/v1/studies", params={"limit": 1}).json()["total"] == before  # the plan stored nothing
        started = time.monotonic()
        r = client.post("/v1/comparisons", json={**TINY, "name": name})
        assert r.status_code == 201, r.text
        c = _wait(client, r.json()["id"])
        wall = time.monotonic() - started
        replan = client.post("/v1/comparisons", json={**TINY, "name": name + "-2", "dry_run": True}).json()
        assert c["state"] == "SUCCEEDED" and c["phase"] == "done", c["error"]
        studies = {s["id"]: s for s in client.get("/v1/studies", params={"limit": 500}).json()["items"]}
        page = client.get(f"/v1/comparisons/{c['id']}/report")
    with session_scope(pg_url) as s:
        records = s.query(StudyRecord).filter_by(comparison_id=c["id"]).all()
        s.expunge_all()
    spec = load_comparison_preset("compare-quick", {k: v for k, v in TINY.items() if k != "preset"})
    storage = open_storage(pg_url)
    seeds = {r: rerun_seeds(spec, r) for r in (0, 1)}
    assert seeds == {0: [RERUN_SEED_BASE, RERUN_SEED_BASE + 1], 1: [RERUN_SEED_BASE + 32, RERUN_SEED_BASE + 33]}
    assert len(c["arms"]) == 2 and {r.role for r in records} <= {"tune", "extend", "rerun"}

    # equal spending, counted from storage: every tuning (and extension) trial's epochs, whatever its state; each
    # record's stored count agrees; every arm at a batch size × repeat within one trial's epochs of the others
    spent: dict[tuple[int, int], dict[str, int]] = {}
    for record in (r for r in records if r.role in ("tune", "extend")):
        trials = optuna.load_study(study_name=record.name, storage=storage).get_trials()
        counted = sum(trial_epochs(t) for t in trials if t.state.is_finished())
        assert record.epochs_spent == counted
        per_arm = spent.setdefault((record.batch_size, record.repeat), {})
        per_arm[record.arm] = per_arm.get(record.arm, 0) + counted
    assert len(spent) == 2  # (batch size, repeat)
    for per_arm in spent.values():
        assert set(per_arm) == {"tvlars", "lars_warmup"}
        assert max(per_arm.values()) - min(per_arm.values()) <= spec.workload.epochs
    for arm in c["arms"]:
        mine = [r for r in records if (r.arm, r.batch_size) == (arm["label"], arm["batch_size"])]
        assert arm["epochs_spent"] == sum(r.epochs_spent for r in mine if r.role in ("tune", "extend"))
        assert arm["epochs_spent"] <= arm["epochs_budget"]

    # reference points ran first in every arm and repeat: the official config (and TVLARS's λ → 0 point)
    for record in (r for r in records if r.role == "tune"):
        trials = sorted(optuna.load_study(study_name=record.name, storage=storage).get_trials(), key=lambda t: t.number)
        enqueued = record.spec["enqueue"]
        assert len(enqueued) == (2 if record.arm == "tvlars" else 1)
        assert all(t.user_attrs[TrialAttr.SEED] == record.spec["seed"] + t.number for t in trials)  # R1, stored
        for trial, point in zip(trials, enqueued, strict=False):
            assert trial.user_attrs.get("enqueued") is True
            assert trial.params == pytest.approx(point)
        assert "lam_steps" in trials[0].params if record.arm == "tvlars" else "lam_steps" not in trials[0].params

    # each repeat's winner re-run on the shared fresh seeds (never a tuning seed), at full epochs, never pruned
    reruns = [r for r in records if r.role == "rerun"]
    assert len(reruns) == 2 * 2 and {r.rank for r in reruns} == {1}
    for record in reruns:
        done = optuna.load_study(study_name=record.name, storage=storage).get_trials(states=(TrialState.COMPLETE,))
        assert sorted(spec_seed(studies[record.id], t) for t in done) == seeds[record.repeat]
        assert all(len(t.intermediate_values) == spec.workload.epochs for t in done)
    assert set(c["verdicts"]) == {"1024"}
    for rows in c["verdicts"].values():
        (row,) = rows
        assert (row["arm"], row["against"]) == ("tvlars", "lars_warmup")
        # a paired t over the 2 repeats at α/m = 0.05 (one verdict, one look): a verdict word, never "no difference"
        d = row["difference"]
        assert row["verdict"] in ("better", "worse", "equivalent", "undecided", "inconclusive: search failure"), row
        assert (d["n"], d["n_seeds"], d["alpha"], row["primary"]) == (2, 2, 0.05, True)
        assert [lk["n"] for lk in d["looks"]] == [2] and len(d["repeat_differences"]) == 2 and d["mdd"] is not None

    # the plan held: every arm's epochs (tuning, extensions, re-runs; counted from storage) inside its [min, max];
    # steps per epoch known once trials ran; the wall time estimated from their stored epoch times within 2× of the
    # run's (the run's studies are the only ones of this workload here)
    for planned in plan["arms"]:
        mine = [r for r in records if (r.arm, r.batch_size) == (planned["arm"], planned["batch_size"])]
        ran = sum(
            trial_epochs(t)
            for r in mine
            for t in optuna.load_study(study_name=r.name, storage=storage).get_trials()
            if t.state.is_finished()
        )
        assert planned["epochs"][0] <= ran <= planned["epochs"][1], (planned, ran)
        assert planned["studies"][0] <= len(mine) <= planned["studies"][1]
    assert plan["arms"][0]["steps"] is None and replan["arms"][0]["steps_per_epoch"] > 0
    print("plan", plan, "\nreplan", replan, "\nwall", wall)  # shown with -s: the note's numbers
    low, high = replan["wall_time_s"]
    assert low / 2 <= wall <= 2 * high, (replan["wall_time_s"], wall)
    assert replan["epoch_seconds"]["1024"]["source"].startswith("stored")

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

    # `tvlars-tune compare --plan`: the plan as tables (now with this workload's stored times), nothing queued
    with server.client() as client:
        total = client.get("/v1/comparisons").json()["total"]
        out = subprocess.run(
            [sys.executable, "-m", "service.cli", "compare", "--preset", "compare-quick", "--plan", "--workers", "2"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        print(out.stdout)
        assert "MDD" in out.stdout and "wall time with 2 worker(s)" in out.stdout, out.stdout
        assert client.get("/v1/comparisons").json()["total"] == total


def spec_seed(study: dict, trial: optuna.trial.FrozenTrial) -> int:
    """The seed a trial trained with, as it stored it: the study spec's seed + trial number (vary_seed)."""
    assert study["spec"]["vary_seed"]
    assert trial.user_attrs[TrialAttr.SEED] == study["spec"]["seed"] + trial.number
    return trial.user_attrs[TrialAttr.SEED]


def summarize_from(arm: dict):
    from service.comparisons.stats import Summary

    return Summary(**arm["rerun"])


def _assert_renders(page: str, tmp_path) -> None:
    widths = rendered_image_widths(page, tmp_path)
    assert len(widths) == len(PLOTS) and all(w > 200 for w in widths), widths
