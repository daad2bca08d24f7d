"""Schedulers and a multi-objective sampler through the engine, on Ray (their ask/tell and option checks:
tests/unit/service/engine/test_samplers_schedulers.py)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from service.engine import SUCCEEDED, load_study, run_study
from service.testing.specs import quick_spec
from tests.conftest import unique_name


@pytest.mark.usefixtures("ray_address")
@pytest.mark.parametrize("scheduler", ["median"])
def test_other_schedulers_run_and_record_every_epoch(sqlite_url, scheduler):
    spec = quick_spec(unique_name(scheduler), scheduler={"name": scheduler, "grace_period": 1}, budget={"n_trials": 5})
    outcome = run_study(spec, sqlite_url)
    trials = load_study(sqlite_url, spec["name"]).get_trials()
    assert outcome.state == SUCCEEDED
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.intermediate_values for t in trials)
    for t in trials:  # each trial ran once: no pause-and-restart from epoch 1 (no checkpoints to resume from)
        epochs = t.user_attrs["curves"]["epoch"]
        assert epochs == list(range(1, len(epochs) + 1)) and "restarts" not in t.user_attrs


@pytest.mark.usefixtures("ray_address")
def test_multi_objective_nsga2_study(sqlite_url):
    spec = quick_spec(
        unique_name("mo"),
        objective=[{"metric": "test_acc"}, {"metric": "wall_seconds"}],
        sampler={"name": "nsga2", "seed": 0},
        scheduler={"name": "none"},
        budget={"n_trials": 4},
        workload={"epochs": 2},
    )
    outcome = run_study(spec, sqlite_url)
    study = load_study(sqlite_url, spec["name"])
    assert outcome.state == SUCCEEDED and outcome.n_complete == 4
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in study.get_trials())
    assert study.best_trials and isinstance(outcome.best_value, list)
