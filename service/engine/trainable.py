"""The Ray Tune trainable: one trial of ``tvlars.train.run``, reporting each epoch to Tune.

A trial's own exception (bad hyperparameters, missing data, a bug) is caught and reported as a final result with
``error`` set, so the engine records it as FAIL with its message and Ray does not retry it: Ray's retries are kept
for infrastructure failures (a worker process killed, a node lost).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from typing import Any

from ray import tune

__all__ = ["jsonable", "train_trial"]

#: Characters of a traceback kept with a failed trial.
MAX_TRACEBACK_CHARS = 4000


def jsonable(value: Any) -> Any:
    """Plain JSON data: NaN and ±inf become None (JSON has no such numbers), tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def train_trial(config: dict[str, Any]) -> None:
    """Tune function trainable. ``config``: ``{"trial": <tvlars.train config>, "number": <Optuna trial number>}``."""
    from tvlars.train import run  # imported in the worker, so the driver never loads torch for this

    trial_config = dict(config["trial"])
    if "num_threads" not in trial_config:
        # a trial holding N CPUs uses N threads, not every core of the machine
        trial_config["num_threads"] = max(1, int(os.environ.get("OMP_NUM_THREADS") or 0) or _cpus_assigned())
    epochs = trial_config.get("epochs")
    started = time.perf_counter()
    last_epoch = 0

    def report(row: dict[str, Any]) -> None:
        nonlocal last_epoch
        last_epoch = row["epoch"]
        row = {**row, "wall_seconds": time.perf_counter() - started}
        row["final"] = bool(row.get("diverged")) or row["epoch"] == epochs
        tune.report(jsonable(row))

    try:
        run(trial_config, report)
    except Exception as e:  # recorded as FAIL with its reason; see the module docstring
        tune.report(
            {
                "epoch": last_epoch,
                "final": True,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-MAX_TRACEBACK_CHARS:],
                "wall_seconds": time.perf_counter() - started,
            }
        )


def _cpus_assigned() -> int:
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        return max(1, math.ceil(cpus))
    except Exception:  # outside Ray (tests calling this directly): one thread
        return 1
