"""Warm trial runners (service/engine/runners.py) against real Ray and real training: a runner is kept from one
study to the next, and a runner killed with SIGKILL mid-trial has its trial continue from its checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ray
from optuna.trial import TrialState

from service.engine import SUCCEEDED, load_study, run_study
from service.engine.runners import RUNNERS
from service.errors import NotFoundError
from service.testing.specs import quick_spec
from tests.conftest import unique_name

pytestmark = pytest.mark.usefixtures("ray_address")

EPOCHS = 40


def _busy_runner(trial_id: str) -> tuple[object, int] | None:
    for handle in RUNNERS.live():
        try:
            pid, running = ray.get(handle.current.remote(), timeout=10)
        except Exception:  # a released runner
            continue
        if running == trial_id:
            return handle, pid
    return None


def test_a_runner_serves_the_next_study_and_a_killed_runner_continues_from_its_checkpoint(
    sqlite_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("TVLARS_RUNNER_IDLE_S", "60")  # (the tests' 1 s could pass between the two studies)
    none = {"name": "none"}
    first = quick_spec(unique_name("warm-a"), scheduler=none, budget={"n_trials": 1, "max_concurrent": 1})
    assert run_study(first, sqlite_url, results_dir=tmp_path).state == SUCCEEDED
    kept = RUNNERS.live()
    assert len(kept) == 1  # the study's runner waits for the next study

    second = quick_spec(
        unique_name("warm-b"), scheduler=none, budget={"n_trials": 1, "max_concurrent": 1}, workload={"epochs": EPOCHS}
    )
    out: dict = {}
    driver = threading.Thread(target=lambda: out.update(o=run_study(second, sqlite_url, results_dir=tmp_path)))
    driver.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None:
        assert time.monotonic() < deadline and driver.is_alive(), "no checkpointed running trial in time"
        try:
            trials = load_study(sqlite_url, second["name"]).get_trials(states=(TrialState.RUNNING,))
        except NotFoundError:  # not created yet
            trials = []
        for t in trials:
            saved = (t.user_attrs.get("checkpoint") or {}).get("epoch") or 0
            found = _busy_runner(t.user_attrs["ray_trial_id"]) if 2 <= saved < EPOCHS - 10 else None
            if found is not None:
                handle, pid = found
                assert handle._actor_id == kept[0]._actor_id  # the first study's runner: no new actor
                os.kill(pid, signal.SIGKILL)
                killed = t
        time.sleep(0.1)
    driver.join(timeout=180)
    assert not driver.is_alive()
    assert out["o"].state == SUCCEEDED, out["o"]
    (trial,) = load_study(sqlite_url, second["name"]).get_trials()
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["resumed_from_epoch"] >= killed.user_attrs["checkpoint"]["epoch"]
    assert trial.user_attrs["restarts"] == 1
    assert trial.user_attrs["curves"]["epoch"] == list(range(1, EPOCHS + 1))
    assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))
    assert trial.user_attrs["train_seconds"] > 0
    assert trial.user_attrs["checkpoint"] is None  # ended: nothing to continue
