"""Warm trial runners: Ray actors of the engine's own, kept by a worker from one study to the next.

A study without a trial scheduler (``scheduler: none``, what every comparison study uses) runs its trials here
instead of in a Ray Tune run: :func:`run_trials` asks the study's :class:`~.searcher.OptunaStudySearcher` for
trials (Optuna's ask), hands each to an idle :class:`TrialRunner` actor and feeds every epoch's result back to the
searcher (Optuna's tell), exactly as Ray Tune would. What it saves per study is what a Tune run costs to start: the
Tuner and its experiment folders, a new actor process that imports torch, and the dataset loaded again. A runner
keeps its process, its imports and the datasets it loaded (keyed by dataset, data folder and options) until it has
been idle for :data:`RUNNER_IDLE_S` seconds.

The guarantees are Tune's:

- every ``checkpoint_every`` epochs a trial's state is copied to the study's storage path (a folder every node
  sees, or an object-store URI) before the epoch's result reaches the driver, which records it in the trial's
  ``checkpoint`` user attr;
- a runner that dies (its process killed, its node lost) has its trial started again from that checkpoint on a new
  runner, up to :data:`~.ray_setup.RAY_MAX_FAILURES` times, and then the trial is FAIL (kind ``infrastructure``)
  with Ray's error;
- a trial's own exception is its result (FAIL, kind ``error``, with the traceback): :func:`.trainable.run_trial`
  is the same function Tune runs;
- a cancel or a failure budget spent stops the run within a stop poll (:data:`~.ray_setup.STOP_POLL_S`): the
  busy runners are killed (their trials are then failed as cancelled by the study's driver).

Schedulers (ASHA, median, HyperBand, PBT) pause, stop and clone trials: those studies keep Ray Tune, and the idle
runners are released first so their CPUs are Tune's.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.tune.search import Searcher

from search_spaces.spec import StudySpec
from tvlars.train.metrics import Metric

from .._optuna import is_outage
from ..errors import StorageError
from ..trial_report import EpochReport
from .ray_setup import RAY_MAX_FAILURES

__all__ = ["RUNNER_IDLE_S", "RUNNERS", "TrialRunner", "checkpoint_storage", "run_trials", "uses_runners"]

log = logging.getLogger(__name__)

#: An idle runner is kept this long for the next study, then released (``TVLARS_RUNNER_IDLE_S`` overrides it).
RUNNER_IDLE_S = 10.0
#: How long the driver waits for news from its runners before it looks at the stop conditions again.
WAIT_S = 0.1
#: A runner answers a poll at once when its trial has news, else after this many seconds.
POLL_S = 1.0
#: The key a runner adds to a result that came with a checkpoint: where the checkpoint now is.
_CHECKPOINT_KEY = "_checkpoint_uri"
#: Datasets a runner keeps in memory, the most recently used first.
DATASETS_KEPT = 2
#: A worker waits this long for its warm runner before it says it is ready (:meth:`RunnerPool.prestart`).
PRESTART_WAIT_S = 30.0


def uses_runners(spec: StudySpec) -> bool:
    """Whether a study runs on warm runners (no scheduler; ``TVLARS_WARM_RUNNERS=0`` turns them off)."""
    return spec.scheduler.name == "none" and os.environ.get("TVLARS_WARM_RUNNERS", "1") != "0"


def checkpoint_storage(storage: str) -> str:
    """A storage path as runners write to it: an absolute local folder (created), or the URI unchanged."""
    if "://" in storage:
        return storage
    path = Path(storage).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


# -- the actor ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoints:
    """How a warm runner checkpoints its trials: at most one per ``interval_s`` seconds of a trial (0: after every
    epoch), the last ``keep`` kept. A runner killed under its trial starts it again from its latest checkpoint, so
    it loses at most ``interval_s`` of training (a trial shorter than that, all of it); a checkpoint of a small
    model costs tens of milliseconds (a save, a copy to the study's storage, a record in Optuna), which a trial of
    one second per epoch would otherwise pay every epoch."""

    keep: int = 2
    interval_s: float = 0.0


class TrialRunner:
    """A Ray actor that runs one trial at a time in a thread of its own and hands back its results when polled."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._results: list[dict[str, Any]] = []
        self._done = True
        self._trial: str | None = None
        self._copies: _CheckpointCopies | None = None
        _cache_datasets()
        from . import trainable  # noqa: F401  (imported now, while the runner waits: not under its first trial)

    def current(self) -> tuple[int, str | None]:
        """Its process id, and the trial it runs (None when idle)."""
        with self._cond:
            return os.getpid(), None if self._done else self._trial

    def ready(self) -> str:
        """Where it runs (its Ray node id); answered once the actor has started."""
        return ray.get_runtime_context().get_node_id()

    def start(self, config: dict[str, Any], trial_id: str, storage: str, folder: str, policy: Checkpoints) -> None:
        """Start a trial (see :func:`.trainable.run_trial`); checkpoints go to ``storage``/``folder``."""
        with self._cond:
            if not self._done:
                raise RuntimeError("this runner is running a trial already")
            self._results, self._done, self._trial = [], False, trial_id
            self._cond.notify_all()
        threading.Thread(
            target=self._run, args=(config, trial_id, storage, folder, policy), name="trial", daemon=True
        ).start()

    def poll(self, trial_id: str, timeout: float, recorded: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """The trial's results since the last poll (waiting up to ``timeout`` for one), and whether it has ended.
        ``recorded``: the checkpoint the driver has recorded as the trial's latest (older copies may go now).

        (A threaded actor may run a poll before the ``start`` sent ahead of it: the poll then waits for it.)
        """
        copies = self._copies
        if recorded is not None and copies is not None and self._trial == trial_id:
            copies.recorded(recorded)
        with self._cond:
            self._cond.wait_for(lambda: self._trial == trial_id and (self._results or self._done), timeout)
            if self._trial != trial_id:
                return [], False
            out, self._results = self._results, []
            return out, self._done

    def _run(self, config: dict[str, Any], trial_id: str, storage: str, folder: str, policy: Checkpoints) -> None:
        from .trainable import run_trial

        saved = self._copies = _CheckpointCopies(storage, folder, policy.keep)

        def send(result: dict[str, Any], checkpoint: Path | None) -> None:
            if checkpoint is not None:
                result = {**result, _CHECKPOINT_KEY: saved.add(checkpoint, result.get(Metric.EPOCH))}
            with self._cond:
                self._results.append(result)
                self._cond.notify_all()

        try:
            run_trial(config, send, trial_id=trial_id, checkpoint_interval_s=policy.interval_s)
        except BaseException as e:  # run_trial reports the trial's own errors; this is the runner's (a full disk)
            log.exception("trial %s: the runner failed", trial_id)
            failed = EpochReport(0, final=True, error=f"the trial runner failed: {type(e).__name__}: {e}")
            with self._cond:
                self._results.append(failed.to_result())
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()


class _CheckpointCopies:
    """Copies a trial's checkpoint folders to ``storage``/``folder``/``checkpoint_NNNNNN``, keeping the last
    ``keep`` — and never one the driver may still restore from: a copy is deleted only once the driver has recorded
    a newer one (a runner outliving a killed driver goes on for a few epochs; the checkpoint in storage must stay).
    Returns each copy's path or URI (what ``ray.tune.Checkpoint`` opens)."""

    def __init__(self, storage: str, folder: str, keep: int) -> None:
        import pyarrow.fs

        self.fs, root = pyarrow.fs.FileSystem.from_uri(storage)
        self.root, self.storage, self.folder, self.keep = root.rstrip("/"), storage.rstrip("/"), folder, keep
        self.saved: list[tuple[str, str]] = []  # (URI, path) of each copy kept, oldest first
        self.lock = threading.Lock()
        self.kept = 0  # copies before this index may go (older than the latest the driver recorded)

    def add(self, local: Path, epoch: int | None) -> str:
        import pyarrow.fs

        relative = f"{self.folder}/checkpoint_{int(epoch or 0):06d}"
        target = f"{self.root}/{relative}"
        self.fs.create_dir(target, recursive=True)
        pyarrow.fs.copy_files(
            str(local), target, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=self.fs
        )
        uri = f"{self.storage}/{relative}"
        with self.lock:
            self.saved.append((uri, target))
        self._prune()
        return uri

    def recorded(self, uri: str) -> None:
        """The driver recorded ``uri`` as the trial's latest checkpoint: the copies before it may go."""
        with self.lock:
            uris = [u for u, _ in self.saved]
            if uri in uris:
                self.kept = max(self.kept, uris.index(uri))
        self._prune()

    def _prune(self) -> None:
        while True:
            with self.lock:
                if len(self.saved) <= max(1, self.keep) or self.kept <= 0:
                    return
                _, target = self.saved.pop(0)
                self.kept -= 1
            try:
                self.fs.delete_dir(target)
            except OSError:  # already gone: nothing to keep tidy
                pass


def _cache_datasets() -> None:
    """Keep the datasets this process loads (the last :data:`DATASETS_KEPT`), keyed by name, folder and options.

    The trainer reads its dataset through ``tvlars.train.trial.load_dataset``; in a runner, that name is given a
    cache in front, so a runner's next trial on the same data starts training at once.
    """
    from tvlars.train import trial as trial_module

    load = trial_module.load_dataset
    if getattr(load, "runner_cache", False):
        return
    kept: dict[str, Any] = {}

    @functools.wraps(load)
    def cached(name: str, data_dir: Any = None, **options: Any) -> Any:
        key = json.dumps([name, str(data_dir), options], sort_keys=True, default=str)
        if key not in kept:
            kept[key] = load(name, data_dir, **options)
        kept[key] = kept.pop(key)  # most recent last
        while len(kept) > DATASETS_KEPT:
            kept.pop(next(iter(kept)))
        return kept[key]

    cached.runner_cache = True  # type: ignore[attr-defined]
    trial_module.load_dataset = cached


# -- the driver's side: the pool ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Runner:
    handle: Any
    key: tuple[float, float]  # (cpu, gpu) it holds
    ready_ref: Any
    ready: bool = False


class RunnerPool:
    """This process's runners: idle ones wait for the next study for :data:`RUNNER_IDLE_S`, then are released."""

    def __init__(self) -> None:
        self._idle: list[_Runner] = []
        self._lock = threading.Lock()
        self._last_used = time.monotonic()
        self._reaper: threading.Thread | None = None
        self._live: list[_Runner] = []  # every runner this pool started and has not released

    def live(self) -> list[Any]:
        """The actor handles of the runners this process started and has not released (idle or busy)."""
        with self._lock:
            return [r.handle for r in self._live]

    def take(self, key: tuple[float, float], n: int) -> list[_Runner]:
        """Up to ``n`` idle runners holding ``key``'s resources; idle runners of other resources are released."""
        with self._lock:
            mine = [r for r in self._idle if r.key == key][:n]
            others = [r for r in self._idle if r not in mine]
            self._idle = []
        self.forget(others)
        return mine

    def new(self, key: tuple[float, float]) -> _Runner:
        """A new runner (its actor starts in the background, when Ray has room for it)."""
        actor = ray.remote(TrialRunner).options(num_cpus=key[0], num_gpus=key[1], max_concurrency=4)
        handle = actor.remote()
        runner = _Runner(handle, key, handle.ready.remote())
        with self._lock:
            self._live.append(runner)
        return runner

    def prestart(self, key: tuple[float, float] = (1.0, 0.0), wait_s: float = PRESTART_WAIT_S) -> None:
        """Start one runner now and keep it idle (released after :data:`RUNNER_IDLE_S` unused, as any idle one): a
        worker calls this as it starts, so its first study does not wait for an actor to start and import torch.

        Waits up to ``wait_s`` for it to be up (the worker says it is ready only then); a runner Ray has no room for
        yet (a busy cluster) comes up in the background, as any other.
        """
        if os.environ.get("TVLARS_WARM_RUNNERS", "1") == "0":
            return
        runner = self.new(key)
        try:
            ray.get(runner.ready_ref, timeout=wait_s)
            runner.ready = True
        except ray.exceptions.GetTimeoutError:
            log.info("the warm trial runner is not up after %.0f s: it starts in the background", wait_s)
        except Exception as e:  # it died starting: the first study starts one of its own
            log.warning("the warm trial runner failed to start: %s", e)
            self.forget([runner])
            return
        self.give_back([runner])

    def give_back(self, runners: list[_Runner]) -> None:
        with self._lock:
            self._idle.extend(runners)
            self._last_used = time.monotonic()
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="runner-reaper", daemon=True)
                self._reaper.start()

    def release(self) -> None:
        """Release every idle runner now (before a Ray Tune run, which needs their resources)."""
        with self._lock:
            idle, self._idle = self._idle, []
        self.forget(idle)

    def forget(self, runners: list[_Runner]) -> None:
        """Kill these runners (busy ones of a stopped study, idle ones released) and forget them."""
        _kill(runners)
        with self._lock:
            self._live = [r for r in self._live if r not in runners]

    def _reap(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                idle_s = float(os.environ.get("TVLARS_RUNNER_IDLE_S") or RUNNER_IDLE_S)
                if not self._idle or time.monotonic() - self._last_used < idle_s:
                    continue
                idle, self._idle = self._idle, []
            self.forget(idle)


def _kill(runners: list[_Runner]) -> None:
    for r in runners:
        try:
            ray.kill(r.handle, no_restart=True)
        except Exception:  # already dead, or Ray is shutting down
            pass


#: The runners of this process (a worker runs one study at a time).
RUNNERS = RunnerPool()


# -- the driver's side: one study ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Active:
    """A trial on a runner."""

    trial_id: str
    config: dict[str, Any]
    runner: _Runner | None = None
    poll_ref: Any = None
    last: dict[str, Any] | None = None
    checkpoint: str | None = None
    failures: int = 0


@dataclass
class _Run:
    spec: StudySpec
    searcher: Any
    storage: str
    folder: str
    checkpoints: Checkpoints
    errors: dict[str, str]
    runners: list[_Runner] = field(default_factory=list)
    active: list[_Active] = field(default_factory=list)
    waiting: list[_Active] = field(default_factory=list)  # trials to start again after their runner died
    count: int = 0
    finished: bool = False


def run_trials(
    spec: StudySpec,
    searcher,
    *,
    stop_reason: Callable[[], str | None],
    storage: str,
    checkpoints: Checkpoints,
    errors: dict[str, str],
) -> str | None:
    """Run a study's trials on warm runners until the searcher has no more or ``stop_reason`` says stop.

    Returns the run's own failure, if any (as :func:`.ray_setup.fit`); ``errors`` gets Ray's message for each
    trial whose runner died once too often (the searcher's ``error_text``).
    """
    key = (float(spec.resources.cpu), float(spec.resources.gpu))
    n = spec.budget.max_concurrent
    folder = f"{spec.name}-{uuid.uuid4().hex[:8]}"
    run = _Run(spec, searcher, checkpoint_storage(storage), folder, checkpoints, errors)
    run.runners = RUNNERS.take(key, n)
    try:
        while True:
            if stop_reason() is not None:
                return None
            while len(run.runners) < n:
                run.runners.append(RUNNERS.new(key))
            _dispatch(run)
            if run.finished and not run.active and not run.waiting:
                return None
            _wait(run)
    except Exception as e:
        if is_outage(e):  # longer than the storage retries: the worker requeues the study
            raise StorageError(f"the database stayed unavailable during the study's run: {e}") from e
        log.exception("study %s: running its trials failed", spec.name)
        return f"the trials' run failed: {type(e).__name__}: {e}"
    finally:
        busy = {id(a.runner) for a in run.active if a.runner is not None}
        RUNNERS.forget([r for r in run.runners if id(r) in busy])  # a stopped study's trials stop now
        RUNNERS.give_back([r for r in run.runners if id(r) not in busy])


def _dispatch(run: _Run) -> None:
    """Start trials on the idle runners that are up: first those to start again, then the searcher's."""
    busy = {id(a.runner) for a in run.active}
    for runner in run.runners:
        if id(runner) in busy or not runner.ready:
            continue
        if run.waiting:
            trial = run.waiting.pop(0)
        elif run.finished:
            return
        else:
            trial_id = f"{run.folder}-{run.count:05d}"
            config = run.searcher.suggest(trial_id)
            if config is None:
                return  # enough trials under way for now
            if config == Searcher.FINISHED:
                run.finished = True
                return
            run.count += 1
            trial = _Active(trial_id, config)
        _start(run, trial, runner)


def _start(run: _Run, trial: _Active, runner: _Runner) -> None:
    config = dict(trial.config)
    if trial.checkpoint is not None:
        config["restore"] = trial.checkpoint
    trial.runner = runner
    folder = f"{run.folder}/{trial.trial_id}"
    runner.handle.start.remote(config, trial.trial_id, run.storage, folder, run.checkpoints)
    trial.poll_ref = runner.handle.poll.remote(trial.trial_id, POLL_S, trial.checkpoint)
    run.active.append(trial)


def _wait(run: _Run) -> None:
    """Wait up to :data:`WAIT_S` for results or for runners coming up, and act on what came."""
    refs = {a.poll_ref: a for a in run.active}
    starting = {r.ready_ref: r for r in run.runners if not r.ready}
    waiting_on = [*refs, *starting]
    if not waiting_on:
        time.sleep(WAIT_S)
        return
    done, rest = ray.wait(waiting_on, num_returns=1, timeout=WAIT_S)
    if done and rest:  # whatever else is in as well
        done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
    for ref in done:
        if ref in starting:
            runner = starting[ref]
            try:
                ray.get(ref)
                runner.ready = True
            except Exception as e:  # it died before it started (its node went away): another takes its place
                log.warning("a trial runner failed to start: %s", e)
                run.runners.remove(runner)
                RUNNERS.forget([runner])
            continue
        trial = refs[ref]
        try:
            results, ended = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            _runner_died(run, trial, e)
            continue
        for result in results:
            uri = result.pop(_CHECKPOINT_KEY, None)
            run.searcher.on_trial_result(trial.trial_id, result)
            if uri is not None:
                trial.checkpoint = uri
                run.searcher.note_checkpoint(trial.trial_id, uri, result.get(Metric.EPOCH))
            trial.last = result
        if ended:
            run.active.remove(trial)
            run.searcher.on_trial_complete(trial.trial_id, trial.last)
        else:
            trial.poll_ref = trial.runner.handle.poll.remote(trial.trial_id, POLL_S, trial.checkpoint)


def _runner_died(run: _Run, trial: _Active, error: Exception) -> None:
    """A runner died under its trial: start the trial again from its checkpoint, or FAIL it after retries."""
    run.active.remove(trial)
    if trial.runner in run.runners:
        run.runners.remove(trial.runner)
        RUNNERS.forget([trial.runner])
    trial.failures += 1
    if trial.failures > RAY_MAX_FAILURES:
        from ._tune import out_of_memory

        text = f"the trial's runner died {trial.failures} times; the last: {error}"
        run.errors[trial.trial_id] = f"out of memory: {text}" if out_of_memory(str(error)) else text
        run.searcher.on_trial_complete(trial.trial_id, None, error=True)
        return
    log.warning(
        "trial %s: its runner died (%s); starting again %s",
        trial.trial_id,
        type(error).__name__,
        f"from {trial.checkpoint}" if trial.checkpoint else "from the start",
    )
    trial.runner, trial.poll_ref = None, None
    run.waiting.append(trial)
