"""Small Ray Tune plug-ins of the engine (imported only where Ray Tune runs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import MedianStoppingRule, TrialScheduler


class StopAll(tune.Stopper):
    """Ends the whole run when ``reason()`` says so (a cancel request, the failure budget spent)."""

    def __init__(self, reason: Callable[[], str | None]) -> None:
        self.reason = reason

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.reason() is not None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its config; the closure (searcher, cancel callback) must not travel with it

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.reason = lambda: None


class TrialErrors(tune.Callback):
    """Keeps Ray's error message for each trial Ray failed, for the trial's ``fail_reason``."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        text = None
        error_file = getattr(trial, "error_file", None)
        if error_file and os.path.exists(error_file):
            text = Path(error_file).read_text()[-2000:]
        self.messages[trial.trial_id] = text or str(getattr(trial, "error_msg", "") or "Ray reported an error")


class MedianStoppingNoPause(MedianStoppingRule):
    """Ray's median stopping rule, except that a trial short of comparison samples runs on instead of pausing.

    Ray pauses such a trial to "yield time" to waiting ones (``_last_pause`` starts at -inf, so ``min_time_slice``
    cannot prevent the first pause); a function trainable without checkpoints would then restart from epoch 1.
    """

    def _on_insufficient_samples(self, tune_controller, trial, time: float) -> str:
        return TrialScheduler.CONTINUE
