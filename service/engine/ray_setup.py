"""Ray and Ray Tune set-up for one study: joining or starting Ray, Tune's environment, and the Tuner."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from search_spaces.spec import StudySpec

from .._optuna import is_outage
from ..errors import StorageError
from .factories import build_scheduler

__all__ = [
    "RAY_MAX_FAILURES",
    "STOP_POLL_S",
    "StopPoller",
    "ensure_ray",
    "fit",
    "resources_unavailable",
    "storage_location",
]

log = logging.getLogger(__name__)

#: How often the stop conditions (cancel flag, failure budget) are polled.
STOP_POLL_S = 0.5
#: Ray restarts a trial this many times after infrastructure failures (never after the trial's own exception).
RAY_MAX_FAILURES = 2


def ensure_ray(address: str | None = None) -> None:
    """Start local Ray, or join the cluster at ``address`` / ``RAY_ADDRESS``, unless this process already has."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    env_vars = {k: os.environ[k] for k in ("TVLARS_DATA_DIR",) if os.environ.get(k)}
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": env_vars} if env_vars else None,
    )


def resources_unavailable(spec: StudySpec) -> str | None:
    """Why no node of the Ray cluster this process joined can run one trial of ``spec`` (its CPUs or GPUs exceed
    every live node's), else None. Ray itself would only warn and leave the trial pending for ever."""
    import ray

    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not nodes or any(all(r.get(k, 0.0) >= v for k, v in need.items() if v > 0) for r in nodes):
        return None
    largest = ", ".join(f"{k} {max(r.get(k, 0.0) for r in nodes):g}" for k in ("CPU", "GPU"))
    return (
        f"no node of the Ray cluster offers the resources one trial asks for (cpu {spec.resources.cpu:g}, "
        f"gpu {spec.resources.gpu:g}); the most any node has: {largest}"
    )


def _tune_env() -> None:
    # Our searcher records every result in Optuna: Tune's own CSV/JSON/TensorBoard loggers only cost time, and a
    # failed trial's last result carries `error` instead of the metric.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # num_to_keep forces a small experiment snapshot after every few checkpoints; Tune warns each time
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # ...so Tune's end-of-run analysis finds no result files and warns once per trial: not news to us.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


class StopPoller:
    """Polls the cancel callback at most every STOP_POLL_S; remembers the first reason to stop."""

    def __init__(self, should_cancel: Callable[[], bool] | None) -> None:
        self.should_cancel = should_cancel
        self.cancelled = False
        self._last = 0.0

    def __call__(self) -> str | None:
        if self.cancelled:
            return "cancelled"
        now = time.monotonic()
        if self.should_cancel is not None and now - self._last >= STOP_POLL_S:
            self._last = now
            if self.should_cancel():
                self.cancelled = True
                return "cancelled"
        return None


def storage_location(storage_path: str | None, results_dir: str | os.PathLike | None) -> str:
    """Where a run's checkpoints go: ``storage_path``, else ``TVLARS_CHECKPOINT_PATH``, else ``results_dir``, else a
    folder under the temp dir."""
    storage = storage_path or os.environ.get("TVLARS_CHECKPOINT_PATH") or None
    if storage is None:
        storage = str(Path(results_dir or Path(tempfile.gettempdir()) / "tvlars-tune-ray").resolve())
    return storage


def fit(
    spec: StudySpec,
    searcher,
    *,
    stop_reason: Callable[[], str | None],
    callbacks: list,
    ray_address: str | None = None,
    results_dir: str | os.PathLike | None = None,
    storage_path: str | None = None,
) -> str | None:
    """Run Ray Tune with ``searcher`` until it or ``stop_reason`` ends the run. Returns Tune's own failure, if any.

    Tune's storage path (its run folders and the trials' checkpoints) is ``storage_path``, else
    ``TVLARS_CHECKPOINT_PATH``, else ``results_dir``, else a folder under the temp dir. On a cluster it must be
    a folder every node sees (NFS) or an object-store URI (``s3://bucket/prefix``, ``gs://...``).
    """
    _tune_env()
    from ray import tune

    from ._tune import CheckpointLocations, StopAll
    from .factories import CHECKPOINTS_KEPT
    from .trainable import train_trial

    ensure_ray(ray_address)
    unfit = resources_unavailable(spec)
    if unfit is not None:  # a trial would wait for ever: the study fails now and the worker moves on
        return unfit
    storage = storage_location(storage_path, results_dir)
    callbacks = [*callbacks, CheckpointLocations(searcher.note_checkpoint, storage)]
    tuner = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=build_scheduler(spec),
            num_samples=-1,
            # synchronous HyperBand compares a bracket's trials, so they must all exist at once (PENDING or
            # PAUSED): a limiter would let each finish alone. Ray's free resources bound how many run.
            max_concurrent_trials=None if spec.scheduler.name == "hyperband" else spec.budget.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{uuid.uuid4().hex[:8]}",
            storage_path=storage,
            stop=StopAll(stop_reason),
            failure_config=tune.FailureConfig(max_failures=RAY_MAX_FAILURES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT.get(spec.scheduler.name, 2)),
            callbacks=callbacks,
            verbose=0,
        ),
    )
    try:
        tuner.fit()
    except Exception as e:  # Tune's own failure: the study stays resumable
        if is_outage(e):  # longer than the storage retries: not the study's fault; the worker requeues it
            raise StorageError(f"the database stayed unavailable during the tuning run: {e}") from e
        log.exception("study %s: tuning run failed", spec.name)
        return f"the tuning run failed: {type(e).__name__}: {e}"
    return None
