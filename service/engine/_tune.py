"""Small Ray Tune plug-ins of the engine (imported only where Ray Tune runs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import MedianStoppingRule, PopulationBasedTraining, TrialScheduler

from tvlars.train.metrics import Metric


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
        text = text or str(getattr(trial, "error_msg", "") or "Ray reported an error")
        self.messages[trial.trial_id] = f"out of memory: {text}" if out_of_memory(text) else text


#: What Ray's memory monitor, the kernel's OOM killer (a worker killed by SIGKILL) and the allocators say.
_OOM_SIGNS = ("OutOfMemoryError", "MemoryError", "out of memory", "memory monitor", "SIGKILL", "signal 9")


def out_of_memory(text: str) -> bool:
    """Whether a trial's error says it ran out of memory (its fail_reason then starts with "out of memory")."""
    return any(sign.lower() in text.lower() for sign in _OOM_SIGNS)


class MedianStoppingNoPause(MedianStoppingRule):
    """Ray's median stopping rule, except that a trial short of comparison samples runs on instead of pausing.

    Ray pauses such a trial to "yield time" to waiting ones (``_last_pause`` starts at -inf, so ``min_time_slice``
    cannot prevent the first pause); a function trainable without checkpoints would then restart from epoch 1.
    """

    def _on_insufficient_samples(self, tune_controller, trial, time: float) -> str:
        return TrialScheduler.CONTINUE


class CheckpointLocations(tune.Callback):
    """Tells the searcher where each trial's latest checkpoint was persisted, as a path or URI to reopen it with.

    ``storage_uri`` is the run's storage path as configured (a folder, or a URI such as ``s3://bucket/prefix``):
    a checkpoint on a remote filesystem is named by that URI plus its place under the storage root.
    """

    def __init__(self, note: Callable[[str, str, int | None], None], storage_uri: str) -> None:
        self.note = note
        self.storage_uri = storage_uri

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        import pyarrow.fs

        path = checkpoint.path
        if not isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
            root = trial.storage.storage_fs_path.rstrip("/")
            path = self.storage_uri.rstrip("/") + "/" + path[len(root) :].lstrip("/")
        epoch = (trial.last_result or {}).get(Metric.EPOCH)
        self.note(trial.trial_id, path, epoch)

    def __getstate__(self) -> dict[str, Any]:
        return {"storage_uri": self.storage_uri}  # the searcher (and its database) never travels with Tune's state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.storage_uri = state["storage_uri"]
        self.note = lambda *args: None


class OptunaPopulationBasedTraining(PopulationBasedTraining):
    """Ray's PBT alongside the engine's Optuna searcher.

    Ray refuses any search algorithm with PBT, because a searcher that learns from (config, result) pairs would
    be misled when PBT changes a trial's config mid-run. The engine's searcher learns nothing from Tune: it asks
    Optuna for each member's initial values, records results per Ray trial id, and writes every exploit into the
    member's ``pbt_lineage`` (see :mod:`service.engine`); so the guard is lifted for it alone.
    """

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(_WithoutSearcher(tune_controller), trial)


class _WithoutSearcher:
    """A controller as PBT's ``on_trial_add`` sees it: without a search algorithm, everything else unchanged."""

    search_alg = None

    def __init__(self, controller) -> None:
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)
