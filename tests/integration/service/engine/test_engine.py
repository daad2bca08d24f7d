"""The study engine against real Ray, real Optuna storage (SQLite and PostgreSQL), real training."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from service.engine import CANCELLED, FAILED, SUCCEEDED, FailKind, load_study, run_study
from service.errors import InvalidSpecError, NameTakenError
from service.testing.specs import quick_spec
from tests.conftest import unique_name

pytestmark = pytest.mark.usefixtures("ray_address")
REPO = Path(__file__).resolve().parents[4]


def _snapshot(study: optuna.Study) -> dict[int, tuple]:
    """What must never change once a trial is finished: state, params, values, intermediate values."""
    return {
        t.number: (t.state, t.params, t.values, dict(t.intermediate_values))
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    }


def test_asha_study_prunes_and_records_every_epoch(storage_url):
    spec = quick_spec(unique_name("asha"), budget={"n_trials": 6})
    outcome = run_study(spec, storage_url)
    study = load_study(storage_url, spec["name"])
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert outcome.state == SUCCEEDED, outcome
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6
    assert TrialState.PRUNED in states, states  # ASHA stopped some trials, recorded honestly as PRUNED
    for t in trials:
        assert t.intermediate_values, t.number  # every finished trial has its per-epoch values
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
        curves = t.user_attrs["curves"]
        assert curves["epoch"] == steps and len(curves["phi"]) == len(steps)
        assert t.user_attrs["device"].startswith("cpu") and t.user_attrs["images_per_s"] > 0
        if t.state == TrialState.PRUNED:
            assert len(steps) < 6 and t.value == t.intermediate_values[steps[-1]]
        else:
            assert len(steps) == 6 and t.value == pytest.approx(curves["val_acc"][-1])
            # validation selects, test is reported beside it: test accuracy at the epoch of best validation
            best_epoch = max(range(6), key=lambda i: (curves["val_acc"][i], -i))
            assert t.user_attrs["best_val_acc"] == pytest.approx(curves["val_acc"][best_epoch])
            assert t.user_attrs["test_acc_at_best_val"] == pytest.approx(curves["test_acc"][best_epoch])
    assert outcome.best_value == max(t.value for t in trials if t.state == TrialState.COMPLETE)
    best = study.trials[outcome.best_trial_number]
    assert outcome.best_metrics == {
        k: best.user_attrs[k] for k in ("best_val_acc", "test_acc_at_best_val", "best_test_acc")
    }
    assert study.metric_names == ["val_acc"]  # optuna-dashboard labels the objective by its metric
    assert study.user_attrs["spec"]["name"] == spec["name"]


def test_raising_trial_is_fail_with_its_message(sqlite_url):
    # a grid over micro_batch_size: 100 and 200 divide the batch, 7 does not and makes the trial raise (in the
    # middle of the choices: the spec's own check at submit runs the space's two corners, which would refuse it)
    spec = quick_spec(
        unique_name("raise"),
        search_space={"micro_batch_size": {"type": "categorical", "choices": [100, 7, 200]}},
        sampler={"name": "grid"},
        scheduler={"name": "none"},
        budget={"n_trials": 3, "max_concurrent": 1, "max_failed": 1},
        workload={"epochs": 1},
    )
    outcome = run_study(spec, sqlite_url)
    study = load_study(sqlite_url, spec["name"])
    by_value = {t.params["micro_batch_size"]: t for t in study.get_trials()}
    assert by_value[100].state == TrialState.COMPLETE
    failed = by_value[7]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_kind"] == FailKind.ERROR
    assert "Invalid micro_batch_size: 7" in failed.user_attrs["fail_reason"]
    assert "Traceback" in failed.user_attrs["traceback"]
    # one error is within max_failed=1, but one of the grid's points never completed
    assert outcome.state == FAILED and "2 of 3" in outcome.reason, outcome.reason


def test_max_failed_ends_the_study_failed(sqlite_url):
    spec = quick_spec(
        unique_name("maxfail"),
        workload={"dataset_options": {"num_samples": 50}, "batch_size": 1000, "epochs": 1},  # too few rows
        budget={"n_trials": 10, "max_concurrent": 1, "max_failed": 2},
        scheduler={"name": "none"},
    )
    outcome = run_study(spec, sqlite_url)
    study = load_study(sqlite_url, spec["name"])
    assert outcome.state == FAILED and "more than budget.max_failed=2" in outcome.reason
    fails = study.get_trials(states=(TrialState.FAIL,))
    assert len(fails) == 3  # stops at the third error, does not burn the whole budget
    # 40 rows, one per class held out for validation (val_fraction 0.1 rounds up to 1 per class)
    assert all("larger than the 30 training examples" in t.user_attrs["fail_reason"] for t in fails)
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_same_name_other_spec_is_refused(sqlite_url):
    spec = quick_spec(unique_name("dup"), budget={"n_trials": 1}, workload={"epochs": 1}, scheduler={"name": "none"})
    assert run_study(spec, sqlite_url).state == SUCCEEDED
    other = quick_spec(spec["name"], budget={"n_trials": 1}, workload={"epochs": 2}, scheduler={"name": "none"})
    with pytest.raises(NameTakenError, match=r"exists with a different spec \(differs in: workload\)"):
        run_study(other, sqlite_url)
    more = quick_spec(spec["name"], budget={"n_trials": 2}, workload={"epochs": 1}, scheduler={"name": "none"})
    with pytest.raises(NameTakenError, match="differs in: budget"):
        run_study(more, sqlite_url)  # changing the budget needs resume=True
    assert run_study(more, sqlite_url, resume=True).n_complete == 2  # runs only the missing trial
    assert len(load_study(sqlite_url, spec["name"]).get_trials()) == 2


def test_rerunning_a_finished_study_adds_nothing(sqlite_url):
    spec = quick_spec(unique_name("again"), budget={"n_trials": 2}, workload={"epochs": 1}, scheduler={"name": "none"})
    run_study(spec, sqlite_url)
    before = _snapshot(load_study(sqlite_url, spec["name"]))
    outcome = run_study(spec, sqlite_url)
    assert outcome.state == SUCCEEDED and _snapshot(load_study(sqlite_url, spec["name"])) == before


def test_enqueued_config_runs_first(sqlite_url):
    spec = quick_spec(
        unique_name("enq"),
        budget={"n_trials": 2, "max_concurrent": 1},
        workload={"epochs": 1},
        scheduler={"name": "none"},
        enqueue=[{"lr": 4.0, "lam": 1e-3}],
    )
    run_study(spec, sqlite_url)
    first = load_study(sqlite_url, spec["name"]).get_trials()[0]
    assert first.params == {"lr": 4.0, "lam": 1e-3} and first.user_attrs["enqueued"] is True


def test_invalid_spec_is_rejected_before_anything_runs(sqlite_url):
    with pytest.raises(InvalidSpecError, match="unknown trial config key 'learning_rate'"):
        run_study(quick_spec("bad", fixed={"learning_rate": 0.1}), sqlite_url)


def test_cancel_stops_running_trials_and_keeps_results(sqlite_url):
    spec = quick_spec(unique_name("cancel"), budget={"n_trials": 20, "max_concurrent": 2}, scheduler={"name": "none"})
    spec["workload"]["epochs"] = 40
    study_done: dict = {}
    start = time.monotonic()

    def should_cancel() -> bool:
        # cancel once one trial has reported a few epochs
        if "study" not in study_done:
            try:
                study_done["study"] = load_study(sqlite_url, spec["name"])
            except Exception:
                return False
        trials = study_done["study"].get_trials(deepcopy=False)
        return any(len(t.intermediate_values) >= 3 for t in trials)

    outcome = run_study(spec, sqlite_url, should_cancel=should_cancel)
    elapsed = time.monotonic() - start
    study = load_study(sqlite_url, spec["name"])
    assert outcome.state == CANCELLED
    assert not study.get_trials(states=(TrialState.RUNNING,))
    cancelled = [t for t in study.get_trials() if t.user_attrs.get("fail_kind") == FailKind.CANCELLED]
    # their epochs so far are kept: the trial whose third epoch triggered the cancel has them all (the other one
    # may have been cancelled before its first epoch, with nothing to keep)
    assert any(len(t.intermediate_values) >= 3 for t in cancelled), [t.intermediate_values for t in cancelled]
    assert all(sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1)) for t in cancelled)
    assert elapsed < 60


def test_killed_driver_then_resume_finishes_the_study(storage_url, tmp_path):
    spec = quick_spec(
        unique_name("kill"),
        budget={"n_trials": 5, "max_concurrent": 1},
        scheduler={"name": "none"},
        workload={"epochs": 12},
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    driver = subprocess.Popen(
        [sys.executable, "-m", "service.engine", str(spec_file), "--storage", storage_url],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    study = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                study = study or load_study(storage_url, spec["name"])
            except Exception:
                time.sleep(0.5)
                continue
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if len(done) >= 2 and running and (running[0].user_attrs.get("checkpoint") or {}).get("epoch", 0) >= 2:
                break
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the driver did not get two trials done in time")
    finally:
        driver.kill()
        driver.wait()
    before = _snapshot(study)
    (killed,) = study.get_trials(states=(TrialState.RUNNING,))  # killed mid-trial, after a checkpoint
    assert len(before) >= 2
    saved_epoch = killed.user_attrs["checkpoint"]["epoch"]

    outcome = run_study(spec, storage_url)  # resume: same spec, same name
    study = load_study(storage_url, spec["name"])
    assert outcome.state == SUCCEEDED
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert outcome.n_complete == 5
    assert not [t for t in study.get_trials() if t.user_attrs.get("fail_kind") == FailKind.ORPHANED]
    # the killed trial continued from its checkpoint as the same Optuna trial, its earlier epochs kept
    continued = study.trials[killed.number]
    assert continued.state == TrialState.COMPLETE and len(study.trials) == 5, continued.user_attrs
    assert continued.user_attrs["resumed_from_epoch"] >= saved_epoch
    assert continued.user_attrs["curves"]["epoch"] == list(range(1, 13))
    assert sorted(continued.intermediate_values) == list(range(1, 13))
    after = _snapshot(study)
    assert {n: after[n] for n in before} == before  # no finished trial changed


def test_epoch_budget_caps_what_every_trial_spends_counted_from_storage(sqlite_url):
    """budget.epochs: ended trials' stored epochs + running trials at full epochs never exceed it; SUCCEEDED."""
    from service.optuna_queries import epochs_spent, trial_epochs

    budgets = {}
    lamb_space = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}
    for optimizer, space in (("tvlars", None), ("lamb", lamb_space)):
        overrides = {"optimizer": optimizer, "budget": {"n_trials": 10, "epochs": 14, "max_concurrent": 2}}
        spec = quick_spec(unique_name(optimizer), **overrides)
        if space is not None:
            spec["search_space"] = space
            spec["fixed"] = {"weight_decay": 5e-4}
        outcome = run_study(spec, sqlite_url)
        study = load_study(sqlite_url, spec["name"])
        trials = study.get_trials()
        assert outcome.state == SUCCEEDED, outcome
        assert outcome.reason and "epoch budget" in outcome.reason
        assert len(trials) < 10  # the epoch cap, not n_trials, ended the study
        spent = epochs_spent(study)
        assert spent == sum(trial_epochs(t) for t in trials) == sum(len(t.intermediate_values) for t in trials)
        assert 14 - 6 < spent <= 14  # no room left for one more 6-epoch trial, and never more than the budget
        assert outcome.epochs_spent == spent  # what the worker stores on the study record
        budgets[optimizer] = spec["budget"]["epochs"]
    assert budgets["tvlars"] == budgets["lamb"]
