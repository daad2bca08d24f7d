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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search_spaces.spec import StudySpec

from .._optuna import end_trial, reopen_trial, set_intermediate_value, set_user_attrs, stored_intermediate_values
from ..core.jsondata import jsonable
from ..errors import FencedError
from ..optuna_queries import epochs_spent, stored_trials
from ..trial_report import MAX_REASON_CHARS, EpochReport, FailKind, TrialAttr, curves, summary

__all__ = [
    "OptunaStudySearcher",
    "Resumable",
    "TrialRun",
]

log = logging.getLogger(__name__)


@dataclass
class TrialRun:
    """What the driver tracks of one running trial."""

    optuna_trial: optuna.Trial
    started: float = field(default_factory=time.time)
    results: list[EpochReport] = field(default_factory=list)
    restarts: int = 0
    attempt: str | None = None  # the trainable's token of the run that reports now
    where: tuple[Any, Any] = (None, None)  # (node_id, hostname) last recorded
    lineage: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Resumable:
    """A trial a dead driver left RUNNING, with the checkpoint it is to continue from."""

    trial: optuna.trial.FrozenTrial
    checkpoint: str  # a path or URI Ray's ``Checkpoint`` opens


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
        fenced: whether this driver lost the study to another (its lease, or its worker's claim); checked before
            every write to the study. Once True the searcher writes nothing more: results still arriving from
            this run's trials are dropped, and it suggests no more trials.
        driver: who drives, stored on each trial this driver asks for and on each it tells (``TrialAttr.DRIVER``).
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
        resumable: list[Resumable] | None = None,
        fenced: Callable[[], bool] | None = None,
        driver: str | None = None,
    ) -> None:
        super().__init__(metric=None, mode=None)  # schedulers take metric and mode from TuneConfig
        self.study = study
        self.spec = spec
        self._distributions = distributions
        self._n_finished = n_finished
        self._n_errors = n_errors
        self._should_stop = should_stop
        self._on_change = on_change or (lambda: None)
        self._error_text = error_text or (lambda trial_id: None)
        self._running: dict[str, TrialRun] = {}  # Ray trial id → the Optuna trial it runs
        self._stop_reason: str | None = None
        self._end_note: str | None = None  # why the study ran out of trials to suggest, if not the budget
        self._grid_points = spec.grid_size() if spec.sampler.name == "grid" else None
        self._lock = threading.Lock()
        self._single_objective = len(spec.objectives) == 1
        self._epoch_budget_spent = False
        self._resumable = list(resumable or [])  # re-launched first, each as the same Optuna trial
        self._numbers: dict[str, int] = {}  # every Ray trial id of this run → its Optuna trial number
        self._fence_check = fenced or (lambda: False)
        self._fenced = False
        self._driver = driver

    @property
    def epoch_budget_spent(self) -> bool:
        """The study stopped starting trials because ``budget.epochs`` had no room for another."""
        return self._epoch_budget_spent

    # -- what the driver reads and does -------------------------------------------------------------------------

    @property
    def stop_reason(self) -> str | None:
        """Why the study must end early (the failure budget spent, a cancel), once known."""
        return self._stop_reason

    @property
    def fenced(self) -> bool:
        """This driver lost the study: it has stopped writing to it (checked now)."""
        if not self._fenced and self._fence_check():
            self._fenced = True
            name = self.study.study_name
            log.warning("study %s: this driver lost the study to another; it tells Optuna nothing more", name)
        return self._fenced

    @property
    def end_note(self) -> str | None:
        """Why the study ran out of trials to suggest, if not the budget (a grid tried in full)."""
        return self._end_note

    def fail_unfinished(self, kind: str, reason: str) -> int:
        """FAIL every trial still running (Tune ended without telling us how it ended). Returns how many."""
        with self._lock:
            runs, self._running = list(self._running.values()), {}
        if self.fenced:
            return 0
        with self._writing():
            for run in runs:
                self._fail(run.optuna_trial, kind, reason, self._told_by())
            return len(runs)
        return 0

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Writes to the study: one that finds the lease another driver's (:func:`.._optuna.fenced_writes`) ends
        the block, and this driver is fenced from then on."""
        try:
            yield
        except FencedError:
            if not self._fenced:
                self._fenced = True
                name = self.study.study_name
                log.warning("study %s: a write found the lease lost; this driver tells Optuna nothing more", name)

    # -- Searcher API ---------------------------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = self._should_stop()
            if self._stop_reason is not None:
                return Searcher.FINISHED
            if self.fenced:
                return Searcher.FINISHED
            with self._writing():
                return self._ask(trial_id)
            return Searcher.FINISHED

    def _ask(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial's config, or what :meth:`suggest` answers when there is none (lock held)."""
        if self._resumable:
            return self._relaunch(trial_id, self._resumable.pop(0))
        remaining = self.spec.budget.n_trials - self._n_finished  # type: ignore[operator]
        if remaining <= len(self._running) or self._grid_exhausted() or self._no_epochs_left():
            # enough trials are under way; a failure (or a pruned trial's unspent epochs) may call for another
            return None if self._running else Searcher.FINISHED
        trial = self.study.ask(self._distributions)
        self._running[trial_id] = TrialRun(trial)
        self._numbers[trial_id] = trial.number
        config = self._config(trial.number, dict(trial.params))
        set_user_attrs(trial, {**self._driven_by(trial_id), TrialAttr.SEED: config["trial"]["seed"]})
        return config

    def _driven_by(self, trial_id: str) -> dict[str, Any]:
        """The attrs that say who runs a trial: its Ray trial id, and this driver where it has a name."""
        return {TrialAttr.RAY_TRIAL_ID: trial_id, **({TrialAttr.DRIVER: self._driver} if self._driver else {})}

    def _config(self, number: int, params: dict[str, Any], restore: str | None = None) -> dict[str, Any]:
        seed = self.spec.seed + number if self.spec.vary_seed else self.spec.seed
        config = {
            "trial": self.spec.trial_config(params, trial_seed=seed),
            "number": number,
            "searched": sorted(self.spec.search_space),
        }
        if restore is not None:
            config["restore"] = restore
        return config

    def _relaunch(self, trial_id: str, resumable: Resumable) -> dict[str, Any]:
        """The config that continues a RUNNING trial of a dead driver from its checkpoint (lock held)."""
        frozen = resumable.trial
        trial = reopen_trial(self.study, frozen)
        run = TrialRun(trial, restarts=int(frozen.user_attrs.get(TrialAttr.RESTARTS, 0)) + 1)
        set_user_attrs(trial, {**self._driven_by(trial_id), TrialAttr.RESTARTS: run.restarts})
        run.lineage = list(frozen.user_attrs.get(TrialAttr.PBT_LINEAGE, []))
        self._running[trial_id] = run
        self._numbers[trial_id] = frozen.number
        log.info("trial %d continues from its checkpoint %s", frozen.number, resumable.checkpoint)
        return self._config(frozen.number, dict(frozen.params), restore=resumable.checkpoint)

    def note_checkpoint(self, trial_id: str, uri: str, epoch: int | None) -> None:
        """Record where a running trial's latest checkpoint is, so a resumed study can continue the trial."""
        run = self._running.get(trial_id)
        if run is not None and not self.fenced:
            with self._writing():
                run.optuna_trial.set_user_attr(TrialAttr.CHECKPOINT, {"uri": uri, "epoch": epoch})

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        run = self._running.get(trial_id)
        if run is None:
            return
        if self.fenced:
            log.warning("trial %d: an epoch's result is dropped (this driver lost the study)", run.optuna_trial.number)
            return
        with self._writing():
            self._record(run, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        with self._lock:
            run = self._running.pop(trial_id, None)
        if run is None:
            return
        if self.fenced:
            log.warning("trial %d: its result is dropped (this driver lost the study)", run.optuna_trial.number)
            return
        with self._writing():
            if result is not None:
                # the result that made the scheduler stop a trial comes only here, not through on_trial_result
                self._record(run, result)
            self._tell(trial_id, run, result, error)
            self._on_change()

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

    def _no_epochs_left(self) -> bool:
        """``budget.epochs``: stored epochs of ended trials + running trials at full epochs + one more must fit."""
        cap = self.spec.budget.epochs
        if cap is None:
            return False
        full = self.spec.workload.epochs
        if epochs_spent(self.study, running=False) + (len(self._running) + 1) * full <= cap:
            return False
        if not self._running:
            self._epoch_budget_spent = True
            self._end_note = f"the epoch budget is spent: no room for another {full}-epoch trial in {cap}"
        return True

    def _grid_exhausted(self) -> bool:
        """A grid study has tried every point (a failed point is not retried: it would fail again)."""
        if self._grid_points is None:
            return False
        tried = {tuple(sorted(t.params.items())) for t in stored_trials(self.study) if t.state != TrialState.WAITING}
        if len(tried) < self._grid_points:
            return False
        self._end_note = f"every one of the grid's {self._grid_points} points has been tried"
        return True

    # -- recording ------------------------------------------------------------------------------------------------

    def _record(self, run: TrialRun, result: dict[str, Any]) -> None:
        """Keep an epoch's result once, and store the objective as the epoch's intermediate value."""
        trial = run.optuna_trial
        report = EpochReport.from_result(result)
        where = (report.node_id, report.hostname)
        if where != run.where and where != (None, None):  # (no node id: the trial ran outside Ray, in a test)
            node = {TrialAttr.NODE_ID: where[0]} if where[0] is not None else {}
            set_user_attrs(trial, {**node, TrialAttr.HOSTNAME: where[1]})
            run.where = where
        if report.error is not None or report.epoch is None:
            return
        last = run.results[-1] if run.results else None
        if last is not None and (last.epoch, last.wall_seconds) == (report.epoch, report.wall_seconds):
            return  # the same result again: Tune passes the last one to on_trial_complete as well
        if report.attempt != run.attempt:
            self._on_new_attempt(run, report)
        if run.results and report.epoch <= run.results[-1].epoch:
            run.results = [r for r in run.results if r.epoch < report.epoch]
        report.restored_history = None  # kept once, in the reports before this one
        run.results.append(report)
        if self._single_objective:
            value = report.value(self.spec.objectives[0].metric)
            if value is not None and math.isfinite(value):
                # overwrites a step a restarted run reports again (Trial.report would keep the first and warn)
                set_intermediate_value(self.study, run.optuna_trial, int(report.epoch), value)

    def _on_new_attempt(self, run: TrialRun, report: EpochReport) -> None:
        """The trial's function started again: after a retry, a pause (HyperBand), a clone (PBT) or a relaunch.

        Epochs up to the checkpoint it resumed from are kept (from this driver's record, else from the history
        its own checkpoint carries); later ones are replaced by the new run's. Without a checkpoint it starts at
        epoch 1. A PBT clone may jump ahead to its donor's epoch: its curve then has a gap there.
        """
        trial = run.optuna_trial
        if run.attempt is not None:  # (a relaunch counted itself)
            run.restarts += 1
            trial.set_user_attr(TrialAttr.RESTARTS, run.restarts)
        run.attempt = report.attempt
        kept = int(report.resumed_from_epoch) if report.resumed_from_epoch is not None else 0
        earlier = [r for r in run.results if r.epoch <= kept]
        if len(earlier) < kept and report.restored_history and report.cloned_from is None:
            # (a clone's history is its donor's: a member's curve holds only what the member itself reported)
            history = [EpochReport.from_result(row) for row in report.restored_history]
            earlier = [r for r in history if r.epoch <= kept]
        run.results = earlier
        if report.resumed_from_epoch is not None:
            trial.set_user_attr(TrialAttr.RESUMED_FROM_EPOCH, kept)
        if report.cloned_from is not None:
            donor = self._numbers.get(report.cloned_from)
            run.lineage.append({"epoch": kept, "cloned_from_trial": donor, "new_params": report.new_params})
            trial.set_user_attr(TrialAttr.PBT_LINEAGE, jsonable(run.lineage))
        if self._single_objective and earlier:
            # a relaunched trial: its dead driver may not have stored every earlier epoch's value
            stored = stored_intermediate_values(self.study, trial)
            metric = self.spec.objectives[0].metric
            for r in earlier:
                value = r.value(metric)
                if r.epoch not in stored and value is not None and math.isfinite(value):
                    set_intermediate_value(self.study, trial, int(r.epoch), value)

    def _tell(self, trial_id: str, run: TrialRun, result: dict[str, Any] | None, error: bool) -> None:
        """Store how the trial ended: its attrs (who told it, its curves and summary, why it failed) and its state,
        in one transaction."""
        trial = run.optuna_trial
        attrs: dict[str, Any] = {**self._told_by(), TrialAttr.CHECKPOINT: None}  # ended: nothing to continue
        last = run.results[-1] if run.results else None
        if run.results:
            attrs[TrialAttr.CURVES] = jsonable(curves(run.results))
            attrs.update(jsonable(summary(run.results)))
        report = EpochReport.from_result(result) if result is not None else None
        if error:
            reason = self._error_text(trial_id) or "the trial's Ray actor failed (after retries)"
            self._fail(trial, FailKind.INFRASTRUCTURE, reason, attrs)
        elif report is not None and report.error is not None:
            self._fail(trial, FailKind.ERROR, report.error, {**attrs, TrialAttr.TRACEBACK: report.traceback or ""})
            with self._lock:
                self._n_errors += 1
                if self._n_errors > self.spec.budget.max_failed and self._stop_reason is None:
                    self._stop_reason = (
                        f"{self._n_errors} trials failed, more than budget.max_failed={self.spec.budget.max_failed}"
                    )
        elif last is not None and last.final:
            values = [last.value(o.metric) for o in self.spec.objectives]
            if all(v is not None and math.isfinite(v) for v in values):
                end_trial(self.study, trial, attrs, values[0] if self._single_objective else values)
                with self._lock:
                    self._n_finished += 1
            else:
                self._fail(trial, FailKind.NOT_FINITE, f"objective not finite at the end: {values}", attrs)
        elif self._stop_reason is not None or self._should_stop() is not None:
            reason = f"stopped before finishing: {self._stop_reason or 'cancelled'}"
            self._fail(trial, FailKind.CANCELLED, reason, attrs)
        elif self._single_objective and run.results:
            # stopped by the scheduler before its last epoch: PRUNED, valued at its last intermediate value
            end_trial(self.study, trial, attrs, state=TrialState.PRUNED)
            with self._lock:
                self._n_finished += 1
        else:
            self._fail(trial, FailKind.INFRASTRUCTURE, "the trial ended without a final result", attrs)

    def _told_by(self) -> dict[str, Any]:
        return {TrialAttr.TOLD_BY: self._driver} if self._driver is not None else {}

    def _fail(self, trial: optuna.Trial, kind: str, reason: str, attrs: dict[str, Any] | None = None) -> None:
        """FAIL the trial with its kind and reason, written with ``attrs`` in one go."""
        failure = {TrialAttr.FAIL_KIND: kind, TrialAttr.FAIL_REASON: reason[:MAX_REASON_CHARS]}
        end_trial(self.study, trial, {**(attrs or {}), **failure}, state=TrialState.FAIL)
        log.info("trial %d FAIL (%s): %s", trial.number, kind, reason.splitlines()[0] if reason else "")
