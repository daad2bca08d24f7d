"""A Ray Tune searcher that asks an Optuna study for trials and tells it honestly how each one ended.

Unlike ``ray.tune.search.optuna.OptunaSearch``: a trial stopped by the scheduler is told as PRUNED (never COMPLETE
with a partial-budget value), a trial that raised is FAIL with its message, a failed ``tell`` is not swallowed,
the search space is Optuna's own distributions built from the spec, the study keeps its own name, and the searcher
is never pickled into Tune's checkpoints (the Optuna database is the record; resuming reads it back).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search_spaces.spec import StudySpec

from .trainable import jsonable

__all__ = ["FailKind", "OptunaStudySearcher", "TrialRun"]

log = logging.getLogger(__name__)

#: Per-epoch values kept as curves in each trial's user attrs.
CURVE_KEYS = ("train_loss", "test_loss", "test_acc", "lr", "phi", "mean_trust_ratio", "images_per_s")


class FailKind:
    """Why a trial is FAIL (user attr ``fail_kind``). Only ``ERROR`` counts against ``budget.max_failed``."""

    ERROR = "error"  # the trial raised: bad hyperparameters, missing data, a bug
    INFRASTRUCTURE = "infrastructure"  # Ray gave up on it after retries (worker killed, node lost)
    CANCELLED = "cancelled"  # stopped by a cancel request
    ORPHANED = "orphaned"  # left RUNNING by a driver that died
    NOT_FINITE = "not_finite"  # finished, but its objective is NaN/inf


@dataclass
class TrialRun:
    """What the driver tracks of one running trial."""

    optuna_trial: optuna.Trial
    started: float = field(default_factory=time.time)
    results: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0


class OptunaStudySearcher(Searcher):
    """Suggests configs from ``study.ask`` and records results in the study.

    Args:
        study: the Optuna study (its storage is the record).
        spec: the validated study spec.
        n_finished: trials already COMPLETE or PRUNED (from an earlier run of the study).
        n_errors: trials already FAIL with kind ``error``.
        should_stop: polled before each suggestion; a reason string ends the study.
        on_change: called after each trial ends, for progress reporting.
        error_text: returns Ray's error message for a trial id, when Ray failed the trial.
    """

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        distributions: dict[str, BaseDistribution],
        *,
        n_finished: int,
        n_errors: int,
        should_stop: Callable[[], str | None],
        on_change: Callable[[], None] | None = None,
        error_text: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__(metric=None, mode=None)  # schedulers take metric and mode from TuneConfig
        self.study = study
        self.spec = spec
        self.distributions = distributions
        self.n_finished = n_finished
        self.n_errors = n_errors
        self.should_stop = should_stop
        self.on_change = on_change or (lambda: None)
        self.error_text = error_text or (lambda trial_id: None)
        self.running: dict[str, TrialRun] = {}
        self.stop_reason: str | None = None
        self.end_note: str | None = None  # why the study ran out of trials to suggest, if not the budget
        self.grid_points = spec.grid_size() if spec.sampler.name == "grid" else None
        self.lock = threading.Lock()
        self.single_objective = len(spec.objectives) == 1

    # -- Searcher API ---------------------------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = self.should_stop()
            if self.stop_reason is not None:
                return Searcher.FINISHED
            remaining = self.spec.budget.n_trials - self.n_finished  # type: ignore[operator]
            if remaining <= len(self.running) or self._grid_exhausted():
                # enough trials are under way; a failure among them may still call for another one
                return None if self.running else Searcher.FINISHED
            trial = self.study.ask(self.distributions)
            trial.set_user_attr("ray_trial_id", trial_id)
            self.running[trial_id] = TrialRun(trial)
            params = dict(trial.params)
        seed = self.spec.seed + trial.number if self.spec.vary_seed else self.spec.seed
        config = self.spec.trial_config(params, trial_seed=seed)
        return {"trial": config, "number": trial.number}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        run = self.running.get(trial_id)
        if run is not None:
            self._record(run, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        with self.lock:
            run = self.running.pop(trial_id, None)
        if run is None:
            return
        if result is not None:
            # the result that made the scheduler stop a trial comes only here, not through on_trial_result
            self._record(run, result)
        self._tell(trial_id, run, result, error)
        self.on_change()

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: every trial is in the Optuna database, which is what a resumed study reads."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore; see :meth:`save`."""

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its configuration (search_alg included) into its run folder. What it gets is inert: the
        # study's name only, never the storage (which would carry the database URL and credentials).
        return {"study_name": self.study.study_name, "restorable": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _grid_exhausted(self) -> bool:
        """A grid study has tried every point (a failed point is not retried: it would fail again)."""
        if self.grid_points is None:
            return False
        tried = {
            tuple(sorted(t.params.items()))
            for t in self.study.get_trials(deepcopy=False)
            if t.state != TrialState.WAITING
        }
        if len(tried) < self.grid_points:
            return False
        self.end_note = f"every one of the grid's {self.grid_points} points has been tried"
        return True

    # -- recording ------------------------------------------------------------------------------------------------

    def _record(self, run: TrialRun, result: dict[str, Any]) -> None:
        """Keep an epoch's result once, and store the objective as the epoch's intermediate value."""
        if "error" in result or "epoch" not in result:
            return
        last = run.results[-1] if run.results else None
        if last is not None and (last["epoch"], last.get("wall_seconds")) == (
            result["epoch"],
            result.get("wall_seconds"),
        ):
            return  # the same result again: Tune passes the last one to on_trial_complete as well
        if last is not None and result["epoch"] <= last["epoch"]:
            # Ray restarted the trial (a retry after its worker died): the new run's epochs replace the old ones
            run.results = [r for r in run.results if r["epoch"] < result["epoch"]]
            run.restarts += 1
            run.optuna_trial.set_user_attr("restarts", run.restarts)
        run.results.append(result)
        if self.single_objective:
            value = result.get(self.spec.objectives[0].metric)
            if value is not None and math.isfinite(value):
                # straight to the storage, which overwrites a step a restarted run reports again
                # (Trial.report would keep the first value and warn)
                self.study._storage.set_trial_intermediate_value(
                    run.optuna_trial._trial_id, int(result["epoch"]), value
                )

    def _tell(self, trial_id: str, run: TrialRun, result: dict[str, Any] | None, error: bool) -> None:
        trial = run.optuna_trial
        last = run.results[-1] if run.results else {}
        self._save_curves(trial, run)
        if error:
            reason = self.error_text(trial_id) or "the trial's Ray actor failed (after retries)"
            self._fail(trial, FailKind.INFRASTRUCTURE, reason)
        elif result is not None and "error" in result:
            trial.set_user_attr("traceback", result.get("traceback", ""))
            self._fail(trial, FailKind.ERROR, result["error"])
            with self.lock:
                self.n_errors += 1
                if self.n_errors > self.spec.budget.max_failed and self.stop_reason is None:
                    self.stop_reason = (
                        f"{self.n_errors} trials failed, more than budget.max_failed={self.spec.budget.max_failed}"
                    )
        elif last.get("final"):
            values = [last.get(o.metric) for o in self.spec.objectives]
            if all(v is not None and math.isfinite(v) for v in values):
                self.study.tell(trial, values[0] if self.single_objective else values)
                with self.lock:
                    self.n_finished += 1
            else:
                self._fail(trial, FailKind.NOT_FINITE, f"objective not finite at the end: {values}")
        elif self.stop_reason is not None or self.should_stop() is not None:
            self._fail(trial, FailKind.CANCELLED, f"stopped before finishing: {self.stop_reason or 'cancelled'}")
        elif self.single_objective and run.results:
            # stopped by the scheduler before its last epoch: PRUNED, valued at its last intermediate value
            self.study.tell(trial, state=TrialState.PRUNED)
            with self.lock:
                self.n_finished += 1
        else:
            self._fail(trial, FailKind.INFRASTRUCTURE, "the trial ended without a final result")

    def _fail(self, trial: optuna.Trial, kind: str, reason: str) -> None:
        trial.set_user_attr("fail_kind", kind)
        trial.set_user_attr("fail_reason", reason[:2000])
        self.study.tell(trial, state=TrialState.FAIL)
        log.info("trial %d FAIL (%s): %s", trial.number, kind, reason.splitlines()[0] if reason else "")

    def _save_curves(self, trial: optuna.Trial, run: TrialRun) -> None:
        rows = [r for r in run.results if "error" not in r]
        if not rows:
            return
        last = rows[-1]
        trial.set_user_attr("curves", jsonable({k: [r.get(k) for r in rows] for k in ("epoch", *CURVE_KEYS)}))
        speeds = [r["images_per_s"] for r in rows if r.get("images_per_s")]
        summary = {
            "epochs_run": last.get("epoch"),
            "diverged": bool(last.get("diverged")),
            "best_test_acc": last.get("best_test_acc"),
            "final_test_acc": last.get("test_acc"),
            "images_per_s": sum(speeds) / len(speeds) if speeds else None,
            "wall_seconds": last.get("wall_seconds"),
            "device": last.get("device"),
        }
        for key, value in jsonable(summary).items():
            trial.set_user_attr(key, value)
