"""kill -9 a worker mid-trial, start another: the trial continues from its checkpoint as the same Optuna trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from service.testing.server import start_worker, wait_until
from tests.integration.service.test_worker import _submit, _takeover

pytestmark = [pytest.mark.usefixtures("ray_address"), pytest.mark.slow]

EPOCHS = 16


def _checkpointed_running_trial(url: str, name: str):
    """The RUNNING trial once it has a checkpoint of epoch 2 or later, else None."""
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if (t.user_attrs.get("checkpoint") or {}).get("epoch", 0) >= 2:
            return t
    return None


def test_a_trial_killed_with_its_worker_continues_from_its_checkpoint(sqlite_url, tmp_path):
    study_id, name = _submit(
        sqlite_url,
        budget={"n_trials": 2, "max_concurrent": 1},
        scheduler={"name": "none"},
        workload={"epochs": EPOCHS, "batch_size": 250},
    )
    first = start_worker(sqlite_url, tmp_path, "first")
    try:
        killed = wait_until(lambda: _checkpointed_running_trial(sqlite_url, name), 120, "a checkpointed running trial")
    finally:
        first.kill()  # SIGKILL mid-trial: the driver and its Ray actors go, the trial stays RUNNING
        first.wait()
    saved_epoch = killed.user_attrs["checkpoint"]["epoch"]
    second = start_worker(sqlite_url, tmp_path, "second")
    try:
        record = _takeover(sqlite_url, study_id, 180)
    finally:
        second.terminate()
        second.wait(timeout=60)
    assert record.state == "SUCCEEDED", record.error
    study = optuna.load_study(study_name=name, storage=sqlite_url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # the killed trial was not failed nor replaced
    continued = study.trials[killed.number]
    assert continued.user_attrs["resumed_from_epoch"] >= saved_epoch
    assert continued.user_attrs["restarts"] >= 1
    assert continued.user_attrs["curves"]["epoch"] == list(range(1, EPOCHS + 1))  # earlier epochs kept, none twice
    assert sorted(continued.intermediate_values) == list(range(1, EPOCHS + 1))
    assert continued.user_attrs["node_id"] and continued.user_attrs["hostname"]
