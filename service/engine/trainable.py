"""The Ray Tune trainable: one trial of ``tvlars.train.run``, reporting each epoch to Tune.

A trial's own exception (bad hyperparameters, missing data, a bug) is caught and reported as a final result with
``error`` set, so the engine records it as FAIL with its message and Ray does not retry it: Ray's retries are kept
for infrastructure failures (a worker process killed, a node lost).

Checkpoints: every ``checkpoint_every`` epochs (a trial key, default 1) the trainer's whole state goes into a
folder reported with that epoch's result (``tune.report(metrics, checkpoint=Checkpoint.from_directory(...))``);
Ray Tune persists it under the run's storage path (a local folder, a shared path or an object-store URI). A trial
restarts from ``tune.get_checkpoint()`` when Ray retries it (node lost, actor killed), when a scheduler resumes it
after a pause (synchronous HyperBand) or clones another member into it (PBT), and from ``config["restore"]`` when
a resumed study re-launches a trial its dead driver left RUNNING. Each result after a restore carries
``resumed_from_epoch``, and ``cloned_from_trial`` with ``params`` when the state came from another trial; every
result carries ``node_id`` and ``hostname``, where it ran.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from tvlars.train.metrics import Metric

from ..core.jsondata import jsonable
from ..trial_report import EpochReport

__all__ = ["STATE_FILE", "run_trial", "train_trial"]

#: Characters of a traceback kept with a failed trial.
MAX_TRACEBACK_CHARS = 4000
#: The trainer state inside a checkpoint folder (``torch.save``), and what wrote it (JSON).
STATE_FILE = "state.pt"
META_FILE = "trial.json"


def _load_state(checkpoint: tune.Checkpoint) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trainer state and the writer's metadata (``number``: the Optuna trial that saved it)."""
    import torch

    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        meta = json.loads((Path(folder) / META_FILE).read_text())
    return state, meta


#: A trial process's /proc/self/oom_score_adj: under memory pressure the kernel kills a trial before the API or the
#: worker (whose trial then FAILs with "out of memory"). No RLIMIT_AS: it breaks torch's allocator.
TRIAL_OOM_SCORE_ADJ = 500


def _prefer_oom_kill() -> None:
    try:
        Path("/proc/self/oom_score_adj").write_text(str(TRIAL_OOM_SCORE_ADJ))
    except OSError:  # not Linux, or a sandbox that forbids it: the default score
        pass


def train_trial(config: dict[str, Any]) -> None:
    """Tune function trainable. ``config``: ``{"trial": <tvlars.train config>, "number": <Optuna trial number>,
    "searched": [searched keys], "restore": <checkpoint path or URI to start from, optional>}``."""

    def send(result: dict[str, Any], folder: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(folder)) if folder else None
        tune.report(result, checkpoint=checkpoint)  # returns once Tune has persisted the checkpoint

    checkpoint = tune.get_checkpoint()
    run_trial(config, send, trial_id=_trial_id(), checkpoint=checkpoint, from_run=checkpoint is not None)


def run_trial(
    config: dict[str, Any],
    send: Callable[[dict[str, Any], Path | None], None],
    *,
    trial_id: str | None,
    checkpoint: tune.Checkpoint | None = None,
    from_run: bool = False,
    checkpoint_interval_s: float = 0.0,
) -> None:
    """One trial, for any host: Tune's function trainable or the engine's own trial runners (:mod:`.runners`).

    ``send(result, folder)`` gets each epoch's result (``EpochReport.to_result``), with the folder of the
    checkpoint saved for that epoch (or None); the folder is deleted once ``send`` returns. ``checkpoint`` (else
    ``config["restore"]``) is the state to continue from; ``from_run``: it is the host's own checkpoint of this
    run (a retry, a pause, or another trial's state cloned in by PBT). ``checkpoint_interval_s``: an epoch's state
    is saved only when at least this long has passed since the trial started or was last saved (0: every epoch,
    as Tune's schedulers need).
    """
    import torch

    from tvlars.train import run  # imported in the worker, so the driver never loads torch for this

    _prefer_oom_kill()
    trial_config = dict(config["trial"])
    if "num_threads" not in trial_config:
        # a trial holding N CPUs uses N threads, not every core of the machine
        trial_config["num_threads"] = max(1, int(os.environ.get("OMP_NUM_THREADS") or 0) or _cpus_assigned())
    epochs = trial_config.get("epochs")
    number = config.get("number")
    started = time.perf_counter()
    last_epoch = 0
    # what every report of this attempt carries: where it runs, and (once restored) where it continued from
    facts = EpochReport(None, node_id=_node_id(), hostname=socket.gethostname())
    facts.attempt = uuid.uuid4().hex[:12]  # tells the driver that the trial's function started again
    pending: list[Path] = []  # the checkpoint folder to report with the next result
    last_saved = started
    history: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        nonlocal last_epoch
        metrics = dict(row)
        epoch = metrics.pop(Metric.EPOCH)
        result = dataclasses.replace(facts, epoch=epoch, metrics=metrics, wall_seconds=time.perf_counter() - started)
        if history and not last_epoch:
            result.restored_history = history
        last_epoch = epoch
        result.final = result.diverged or epoch == epochs
        folder = pending.pop() if pending else None
        try:
            send(jsonable(result.to_result()), folder)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def save_state(epoch: int, state: dict[str, Any]) -> None:
        nonlocal last_saved
        if epoch == epochs:
            # the trial is done: nothing to continue, and PBT must not clone a finished model into a member that
            # then reports it as its own result
            return
        if time.perf_counter() - last_saved < checkpoint_interval_s:
            return  # the last one is recent enough
        last_saved = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix=f"tvlars-ckpt-{number}-{epoch}-"))
        torch.save(state, folder / STATE_FILE)
        (folder / META_FILE).write_text(json.dumps({"trial_id": trial_id, "number": number, "epoch": epoch}))
        pending[:] = [folder]

    try:
        state = None
        if checkpoint is None and config.get("restore"):
            checkpoint = tune.Checkpoint(config["restore"])
        if checkpoint is not None:
            state, meta = _load_state(checkpoint)
            facts.resumed_from_epoch = int(state["epoch"])
            history = state["history"]  # the epochs before the restore, reported once for a driver that lacks them
            if from_run and meta.get("trial_id") != trial_id:
                # a scheduler gave this trial another's state (PBT's exploit): with its own, new hyperparameters
                facts.cloned_from = meta.get("trial_id")
                facts.new_params = {k: trial_config.get(k) for k in config.get("searched", ())}
        run(trial_config, report, state=state, save_state=save_state)
        if not last_epoch and history:
            # restored after its last epoch (its driver died before recording the end): report that epoch again
            report(dict(history[-1]))
    except Exception as e:  # recorded as FAIL with its reason; see the module docstring
        failed = EpochReport(
            last_epoch,
            final=True,
            error=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc()[-MAX_TRACEBACK_CHARS:],
            wall_seconds=time.perf_counter() - started,
            node_id=facts.node_id,
            hostname=facts.hostname,
        )
        send(failed.to_result(), None)


def _trial_id() -> str | None:
    try:
        return tune.get_context().get_trial_id()
    except Exception:  # outside Tune
        return None


def _in_ray() -> bool:
    """Whether this process is a Ray worker or driver. Asking Ray's runtime context outside Ray would start (or,
    with ``RAY_ADDRESS`` set, connect to) a Ray of its own: never for a trial run directly (tests, ``run_trial``)."""
    import ray

    return ray.is_initialized()


def _node_id() -> str | None:
    if not _in_ray():
        return None
    import ray

    return ray.get_runtime_context().get_node_id()


def _cpus_assigned() -> int:
    if not _in_ray():  # a trial run directly: one thread
        return 1
    import ray

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except AssertionError:  # a Ray driver, not a worker (a test running the trial in its own process): one thread
        return 1
    return max(1, math.ceil(cpus))
