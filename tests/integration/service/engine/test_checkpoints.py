"""Trials checkpoint through Ray Tune: synchronous HyperBand pauses and resumes them, population-based training
clones members into others (each member one Optuna trial, its exploits in ``pbt_lineage``), and every trial says
where it ran."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

from service.engine import SUCCEEDED, load_study, run_study
from service.testing.specs import quick_spec
from tests.conftest import unique_name

pytestmark = [pytest.mark.usefixtures("ray_address"), pytest.mark.slow]


def test_synchronous_hyperband_pauses_and_resumes_trials_from_their_checkpoints(sqlite_url):
    spec = quick_spec(
        unique_name("hb"),
        scheduler={"name": "hyperband", "reduction_factor": 3},
        budget={"n_trials": 6, "max_concurrent": 2},
        workload={"epochs": 9},
    )
    outcome = run_study(spec, sqlite_url)
    trials = load_study(sqlite_url, spec["name"]).get_trials()
    assert outcome.state == SUCCEEDED
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert any(t.state == TrialState.PRUNED for t in trials) and outcome.n_complete >= 1
    resumed = [t for t in trials if "resumed_from_epoch" in t.user_attrs]
    assert resumed, "no trial was paused and resumed"
    for t in trials:
        epochs = t.user_attrs["curves"]["epoch"]
        # a paused trial continues where it stopped: each epoch once, none run again from epoch 1
        assert epochs == list(range(1, len(epochs) + 1))
        assert sorted(t.intermediate_values) == epochs
        assert t.user_attrs["node_id"] and t.user_attrs["hostname"]
        assert t.user_attrs["checkpoint"] is None  # ended: nothing left to continue
    for t in resumed:
        assert 1 <= t.user_attrs["resumed_from_epoch"] < t.user_attrs["epochs_run"]


def test_pbt_records_every_member_as_one_trial_with_its_lineage(sqlite_url):
    spec = quick_spec(
        unique_name("pbt"),
        scheduler={"name": "pbt", "options": {"perturbation_interval": 1, "quantile_fraction": 0.5}},
        budget={"n_trials": 4, "max_concurrent": 4},
        workload={"epochs": 8},
    )
    outcome = run_study(spec, sqlite_url)
    study = load_study(sqlite_url, spec["name"])
    trials = study.get_trials()
    assert outcome.state == SUCCEEDED and outcome.n_complete == 4 and len(trials) == 4
    numbers = {t.number for t in trials}
    lineages = {t.number: t.user_attrs.get("pbt_lineage", []) for t in trials}
    assert any(lineages.values()), "no member exploited another"
    space = spec["search_space"]
    for number, lineage in lineages.items():
        trial = study.trials[number]
        metric = spec["objective"]["metric"]  # the member's value: what it reached at its last epoch
        assert trial.values is not None and trial.value == trial.user_attrs["curves"][metric][-1]
        epochs = trial.user_attrs["curves"]["epoch"]  # what the member reported (a clone may jump ahead)
        assert epochs == sorted(set(epochs)) and epochs[-1] == 8
        for step in lineage:
            assert step["cloned_from_trial"] in numbers - {number}
            assert 1 <= step["epoch"] < 8
            for key, value in step["new_params"].items():
                assert space[key]["low"] <= value <= space[key]["high"] and math.isfinite(value)
        if lineage:  # the latest restore: the last exploit, or a later pause of its own (PBT lets laggards catch up)
            assert trial.user_attrs["resumed_from_epoch"] >= lineage[-1]["epoch"]
