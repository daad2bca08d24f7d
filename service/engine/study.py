"""Run one study: its spec in, a complete and truthful Optuna study out.

The Optuna database is the single record. The study's name is the spec's name and the spec is stored in its user
attrs: running a name that exists with another spec is refused, running it again with the same spec resumes it.
A driver holds a lease on its study (a heartbeat in the study's system attrs) so that two drivers never run one
study; a driver that died leaves a stale lease, and the next run fails the trials it left RUNNING and runs only what
the budget still lacks.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search_spaces.spec import CategoricalParam, FloatParam, StudySpec

from ..errors import ConflictError, InvalidSpecError, NotFoundError
from ..storage import open_storage
from .searcher import FailKind, OptunaStudySearcher

__all__ = [
    "LEASE_KEY",
    "StudyOutcome",
    "build_distributions",
    "build_sampler",
    "ensure_ray",
    "fail_orphaned_trials",
    "load_study",
    "run_study",
    "study_counts",
]

log = logging.getLogger(__name__)

LEASE_KEY = "tvlars-tune:driver"
SPEC_ATTR = "spec"
#: A lease not renewed for this long belongs to a dead driver (a dead local process is noticed at once).
DEFAULT_LEASE_TTL_S = 30.0
#: How often the stop conditions (cancel flag, failure budget) are polled.
STOP_POLL_S = 0.5
#: Ray restarts a trial this many times after infrastructure failures (never after the trial's own exception).
RAY_MAX_FAILURES = 2

SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"


@dataclass
class StudyOutcome:
    """How a run of the engine ended, and the study's counts at that point."""

    study_name: str
    state: str  # SUCCEEDED | FAILED | CANCELLED
    reason: str | None
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | list[float] | None
    best_params: dict[str, Any] | None
    best_trial_number: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- building blocks ---------------------------------------------------------------------------------------------


def build_distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """The spec's search space as Optuna distributions, converted directly (not through Ray's search space)."""
    out: dict[str, BaseDistribution] = {}
    for key, p in spec.search_space.items():
        if isinstance(p, CategoricalParam):
            out[key] = CategoricalDistribution(p.choices)
        elif isinstance(p, FloatParam):
            out[key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        else:
            out[key] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def build_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler, seeded; its ``options`` go to the constructor."""
    s = spec.sampler
    kwargs = dict(s.options)
    if s.name == "grid":
        return _AskTellGridSampler(spec.grid(), seed=s.seed, **kwargs)
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": optuna.samplers.GPSampler,
        "qmc": optuna.samplers.QMCSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
    }
    if s.name == "tpe":
        kwargs.setdefault("multivariate", True)
    try:
        return classes[s.name](seed=s.seed, **kwargs)
    except TypeError as e:
        raise InvalidSpecError(f"sampler.options do not fit the {s.name} sampler: {e}") from None


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose ``after_trial`` does not call ``study.stop()`` when the grid is done: outside
    ``study.optimize`` that raises inside ``tell``. The engine's budget (and its grid check) ends the study."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def build_scheduler(spec: StudySpec):
    """The spec's Ray Tune scheduler, on ``epoch`` as time (None for ``none``).

    ``hyperband`` is asynchronous HyperBand (ASHA over several brackets): it never pauses a trial, so trials need
    no checkpoints to resume.
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from ._tune import MedianStoppingNoPause

    s = spec.scheduler
    if s.name == "none":
        return None
    objective = spec.objectives[0]
    common = dict(
        time_attr="epoch", metric=objective.metric, mode="max" if objective.direction == "maximize" else "min"
    )
    max_t = s.max_t or spec.workload.epochs
    try:
        if s.name in ("asha", "hyperband"):
            brackets = 1 if s.name == "asha" else 3
            options = {"brackets": brackets, **s.options}
            return AsyncHyperBandScheduler(
                **common, max_t=max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor, **options
            )
        return MedianStoppingNoPause(**common, grace_period=s.grace_period, **s.options)
    except TypeError as e:
        raise InvalidSpecError(f"scheduler.options do not fit the {s.name} scheduler: {e}") from None


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


def _tune_env() -> None:
    # Our searcher records every result in Optuna: Tune's own CSV/JSON/TensorBoard loggers only cost time, and a
    # failed trial's last result carries `error` instead of the metric.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # ...so Tune's end-of-run analysis finds no result files and warns once per trial: not news to us.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


# -- the study record --------------------------------------------------------------------------------------------


def load_study(storage_url: str, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage_url))
    except KeyError:
        raise NotFoundError(f"Study not found: {name!r}") from None


def _create_or_load(storage_url: str, spec: StudySpec, resume: bool) -> tuple[optuna.Study, bool]:
    storage = open_storage(storage_url)
    canonical = spec.canonical()
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            directions=spec.directions,
            sampler=build_sampler(spec),
        )
        study.set_user_attr(SPEC_ATTR, canonical)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=build_sampler(spec))
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored != canonical:
        differing = sorted(k for k in set(stored or {}) | set(canonical) if (stored or {}).get(k) != canonical.get(k))
        if not (resume and differing == ["budget"]):
            raise ConflictError(
                f"Study {spec.name!r} exists with a different spec (differs in: {', '.join(differing)}); "
                "choose another name" + ("" if resume else ", or resume it to change only its budget")
            )
        study.set_user_attr(SPEC_ATTR, canonical)
    return study, False


def study_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, and FAIL trials whose kind counts against ``max_failed``."""
    counts = {s.name: 0 for s in TrialState}
    errors = 0
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_kind") == FailKind.ERROR:
            errors += 1
    counts["ERRORS"] = errors
    return counts


def fail_orphaned_trials(study: optuna.Study, reason: str) -> int:
    """FAIL every RUNNING trial (call only while holding the study's lease). Returns how many."""
    storage = study._storage
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "fail_kind", FailKind.ORPHANED)
        storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        if storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
            n += 1
    return n


# -- the driver's lease ------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class _Lease:
    """This driver's claim on a study, renewed by a background thread until released."""

    def __init__(self, study: optuna.Study, ttl_s: float) -> None:
        self.study = study
        self.storage = study._storage
        self.study_id = study._study_id
        self.ttl_s = ttl_s
        self.token = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        """The live lease of another driver, if any."""
        current = self.storage.get_study_system_attrs(self.study_id).get(LEASE_KEY)
        if not current or current.get("released") or current.get("id") == self.token["id"]:
            return None
        if current.get("host") == self.token["host"] and not _pid_alive(int(current.get("pid", -1))):
            return None
        if time.time() - float(current.get("heartbeat", 0)) > self.ttl_s:
            return None
        return current

    def acquire(self) -> None:
        holder = self.holder()
        if holder is not None:
            raise ConflictError(
                f"Study {self.study.study_name!r} is being run by another driver "
                f"(pid {holder.get('pid')} on {holder.get('host')}); cancel it first or wait for it to finish"
            )
        self._write()
        self._thread = threading.Thread(target=self._renew, name="study-lease", daemon=True)
        self._thread.start()

    def _write(self, **extra: Any) -> None:
        self.storage.set_study_system_attr(self.study_id, LEASE_KEY, {**self.token, "heartbeat": time.time(), **extra})

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self._write()
            except Exception:  # a transient DB error: the next beat retries; the lease lasts ttl_s
                log.warning("could not renew the lease on %s", self.study.study_name, exc_info=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._write(released=True)


# -- the run -----------------------------------------------------------------------------------------------------


class _StopPoller:
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


def _outcome(study: optuna.Study, spec: StudySpec, state: str | None, reason: str | None) -> StudyOutcome:
    counts = study_counts(study)
    n_finished = counts["COMPLETE"] + counts["PRUNED"]
    if state is None:
        state = SUCCEEDED if n_finished >= spec.budget.n_trials else FAILED  # type: ignore[operator]
        if state == FAILED:
            reason = f"only {n_finished} of {spec.budget.n_trials} trials finished" + (f" ({reason})" if reason else "")
    best_value = best_params = best_number = None
    if counts["COMPLETE"]:
        if len(spec.objectives) == 1:
            # the leaderboard's order: best value, then the earliest trial among equals
            sign = -1.0 if spec.directions[0] == "maximize" else 1.0
            best = min(
                study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                key=lambda t: (sign * t.value, t.number),
            )
            best_value, best_params, best_number = best.value, best.params, best.number
        else:
            front = study.best_trials
            if front:
                best_value, best_params, best_number = front[0].values, front[0].params, front[0].number
    return StudyOutcome(
        spec.name,
        state,
        reason,
        counts["COMPLETE"],
        counts["PRUNED"],
        counts["FAIL"],
        best_value,
        best_params,
        best_number,
    )


def run_study(
    spec: StudySpec | dict[str, Any],
    storage_url: str,
    *,
    resume: bool = False,
    should_cancel: Callable[[], bool] | None = None,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    ray_address: str | None = None,
    results_dir: str | os.PathLike | None = None,
    lease_ttl_s: float | None = None,
) -> StudyOutcome:
    """Run (or resume) a study to the end of its budget.

    Args:
        spec: a :class:`StudySpec` or its data.
        storage_url: SQLAlchemy URL of the Optuna storage (``sqlite:///...``, ``postgresql+psycopg://...``).
        resume: allow the stored spec's ``budget`` to differ (to extend a study); other fields must match.
        should_cancel: polled about every 0.5 s; True stops running trials (FAIL, kind ``cancelled``) and ends
            the run CANCELLED, keeping every finished trial.
        on_progress: called with the study's counts after each trial ends.
        ray_address: a Ray cluster to join (default: ``RAY_ADDRESS``, else a local Ray).
        results_dir: where Ray Tune keeps its per-run files (default: a folder under the temp dir).
        lease_ttl_s: seconds after which a silent driver's lease counts as stale (default 30; ``TVLARS_LEASE_TTL_S``).

    Returns how the run ended. Raises :class:`ConflictError` for a name taken by another spec or a study another
    live driver holds, and :class:`InvalidSpecError` for a bad spec.
    """
    if not isinstance(spec, StudySpec):
        try:
            spec = StudySpec.model_validate(spec)
        except ValueError as e:
            raise InvalidSpecError(str(e)) from None
    _tune_env()
    from ray import tune

    from ._tune import StopAll, TrialErrors
    from .trainable import train_trial

    ttl = lease_ttl_s if lease_ttl_s is not None else float(os.environ.get("TVLARS_LEASE_TTL_S", DEFAULT_LEASE_TTL_S))
    study, created = _create_or_load(storage_url, spec, resume)
    lease = _Lease(study, ttl)
    lease.acquire()
    try:
        orphans = fail_orphaned_trials(study, "its driver stopped while it ran (failed when the study resumed)")
        if orphans:
            log.warning("study %s: %d trial(s) left RUNNING by a dead driver marked FAIL", spec.name, orphans)
        if created:
            for params in spec.enqueue:
                study.enqueue_trial(params, user_attrs={"enqueued": True}, skip_if_exists=True)
        counts = study_counts(study)
        n_finished = counts["COMPLETE"] + counts["PRUNED"]
        if n_finished >= spec.budget.n_trials:  # type: ignore[operator]
            return _outcome(study, spec, SUCCEEDED, None)
        if counts["ERRORS"] > spec.budget.max_failed and not resume:
            return _outcome(study, spec, FAILED, f"{counts['ERRORS']} trials failed (budget.max_failed)")

        poll = _StopPoller(should_cancel)
        errors = TrialErrors()
        searcher = OptunaStudySearcher(
            study,
            spec,
            build_distributions(spec),
            n_finished=n_finished,
            n_errors=0 if resume else counts["ERRORS"],
            should_stop=poll,
            on_change=(lambda: on_progress(study_counts(study))) if on_progress else None,
            error_text=errors.messages.get,
        )
        ensure_ray(ray_address)
        results = Path(results_dir or Path(tempfile.gettempdir()) / "tvlars-tune-ray").resolve()
        tuner = tune.Tuner(
            tune.with_resources(train_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=build_scheduler(spec),
                num_samples=-1,
                max_concurrent_trials=spec.budget.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{spec.name}-{uuid.uuid4().hex[:8]}",
                storage_path=str(results),
                stop=StopAll(lambda: searcher.stop_reason or poll()),
                failure_config=tune.FailureConfig(max_failures=RAY_MAX_FAILURES),
                callbacks=[errors],
                verbose=0,
            ),
        )
        failure: str | None = None
        try:
            tuner.fit()
        except Exception as e:  # Tune's own failure (e.g. the database went away): the study stays resumable
            failure = f"the tuning run failed: {type(e).__name__}: {e}"
            log.exception("study %s: tuning run failed", spec.name)
        for trial_id, run in list(searcher.running.items()):  # trials Tune stopped without a completion callback
            searcher.running.pop(trial_id, None)
            kind = FailKind.CANCELLED if poll.cancelled else FailKind.INFRASTRUCTURE
            searcher._fail(run.optuna_trial, kind, failure or "stopped when the tuning run ended")
        if failure is not None:
            return _outcome(study, spec, FAILED, failure)
        if poll.cancelled:
            return _outcome(study, spec, CANCELLED, "cancelled")
        if searcher.stop_reason is not None:
            return _outcome(study, spec, FAILED, searcher.stop_reason)
        return _outcome(study, spec, None, searcher.end_note)
    finally:
        lease.release()
