"""Result assembly: a comparison's :class:`.result.ComparisonResult` from what is stored (the studies' records and
their Optuna trials), once every re-run study SUCCEEDED. Nothing is re-trained or recounted."""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search_spaces.comparison import ComparisonSpec, rerun_seed_base
from search_spaces.spec import StudySpec
from tvlars.train.metrics import Metric

from ..models import ComparisonPhase, StudyRecord, StudyState
from ..optuna_queries import load_study_or_none, param_importances, stored_trials, trial_epochs
from ..trial_report import TrialAttr
from .records import TUNING_ROLES, arm_studies
from .reruns import RERUN_METRIC
from .result import ArmResult, ComparisonResult, ParamRange, RepeatRecord, RerunRecord, TrialRecord
from .stats import at_edge, range_position

__all__ = ["build_result", "trial_kind"]


def _rows(curves: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """A trial's column-wise curves (user attr ``curves``) as one row per epoch."""
    if not curves or not curves.get(Metric.EPOCH):
        return []
    keys = list(curves)
    return [{k: curves[k][i] for k in keys if i < len(curves[k])} for i in range(len(curves[Metric.EPOCH]))]


def _seed(t: FrozenTrial, repeat: int) -> int:
    """The seed a trial trained with, as it stored it (``TrialAttr.SEED``); a trial stored before the attribute
    existed: its re-run study's seed rule."""
    stored = t.user_attrs.get(TrialAttr.SEED)
    return int(stored) if stored is not None else rerun_seed_base(repeat) + t.number


def _trial_record(
    t: FrozenTrial, repeat: int = 0, kind: str | None = None, batch_size: int | None = None
) -> TrialRecord:
    # a PRUNED trial is valued at its last intermediate value (as Optuna records it); a FAIL has none
    last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
    value = t.value if t.state == TrialState.COMPLETE else last
    if t.state == TrialState.FAIL or (value is not None and not math.isfinite(value)):
        value = None
    curve = _rows(t.user_attrs.get(TrialAttr.CURVES))
    steps = int(curve[-1][Metric.STEP]) if curve and curve[-1].get(Metric.STEP) is not None else None
    seed = t.user_attrs.get(TrialAttr.SEED)
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        params=dict(t.params),
        value=value,
        epochs=trial_epochs(t),
        wall_seconds=t.user_attrs.get(TrialAttr.WALL_SECONDS),
        curve=curve,
        repeat=repeat,
        seed=None if seed is None else int(seed),
        kind=kind,
        steps=steps,
        examples=None if steps is None or batch_size is None else steps * batch_size,
    )


def trial_kind(t: FrozenTrial, study: StudyRecord) -> str:
    """How a tuning trial's config was chosen (:data:`.result.TRIAL_KINDS`), from its study's role and sampler and
    its ``enqueued`` attribute. TPE's first ``n_startup_trials`` trials (Optuna's default 10) are random draws."""
    if study.role == ComparisonPhase.EXTEND:
        return "extension"
    if t.user_attrs.get(TrialAttr.ENQUEUED):
        return "reference"
    sampler = (study.spec or {}).get("sampler") or {}
    name = sampler.get("name")
    if name in ("sobol", "qmc"):
        return "quasi-random"
    if name == "random":
        return "random"
    if name == "tpe":
        startup = int((sampler.get("options") or {}).get("n_startup_trials", _TPE_STARTUP))
        return "random" if t.number < startup else "tpe"
    return "other"


#: Optuna TPESampler's default ``n_startup_trials``.
_TPE_STARTUP = 10


def build_result(storage_url: str, spec: ComparisonSpec, studies: list[StudyRecord]) -> ComparisonResult:
    """The comparison's result from what is stored: per arm × batch size and tuning repeat, the tuning and extension
    studies' trials, their stored ``epochs_spent``, the winner and where it sits in its searched ranges (the range
    check's ``outcome["range_check"]`` says which were extended), and the re-runs of each repeat's winner.

    Nothing is recounted or re-trained. A study that did not succeed, or that holds no trials, is listed in the arm's
    ``problems`` (its verdicts are then inconclusive) instead of failing the whole result.
    """
    sign = -1.0 if spec.objective.direction == "maximize" else 1.0
    arms = []
    for arm, bs, mine in arm_studies(spec, studies):
        problems = [f"study {s.name} {s.state}" for s in mine if s.state != StudyState.SUCCEEDED]
        trials: list[TrialRecord] = []
        reruns: list[RerunRecord] = []
        repeats: list[RepeatRecord] = []
        importances: list[dict[str, float]] = []
        for repeat in range(spec.repeats_max):
            tuning = [s for s in mine if s.role in TUNING_ROLES and (s.repeat or 0) == repeat]
            if not any(s.role == ComparisonPhase.TUNE for s in tuning):
                if repeat < spec.repeats_min:
                    problems.append(f"no tuning study for repeat {repeat}")
                continue  # a round this batch size never needed (its verdicts were decided, R4)
            found: list[TrialRecord] = []
            for study in tuning:
                stored = load_study_or_none(storage_url, study.name)
                if stored is None:
                    problems.append(f"study {study.name} has no trials stored")
                    continue
                found += [
                    _trial_record(t, repeat, trial_kind(t, study), bs)
                    for t in stored_trials(stored)
                    if t.state.is_finished()
                ]
                if study.role == ComparisonPhase.TUNE:
                    importances.append(param_importances(stored))
            trials += found
            repeats.append(_repeat_record(repeat, tuning, found, sign))
            for study in (s for s in mine if s.role == ComparisonPhase.RERUN and (s.repeat or 0) == repeat):
                stored = load_study_or_none(storage_url, study.name)
                for t in stored_trials(stored, (TrialState.COMPLETE,)) if stored else []:
                    curve = _rows(t.user_attrs.get(TrialAttr.CURVES))
                    reruns.append(RerunRecord(_seed(t, repeat), float(t.value), curve, study.rank or 1, repeat))
        # the trainer's cumulative step count after the first epoch is the steps per epoch
        firsts = [run.curve[0] for run in reruns if run.curve and run.curve[0].get(Metric.STEP)]
        steps = int(firsts[0][Metric.STEP]) if firsts else 0
        tune = next((s for s in mine if s.role == ComparisonPhase.TUNE), None)
        best = min((r for r in repeats if r.best_value is not None), key=lambda r: sign * r.best_value, default=None)  # type: ignore[operator]
        arms.append(
            ArmResult(
                label=arm.name,
                optimizer=arm.optimizer,
                batch_size=bs,
                studies=[s.id for s in mine],
                best_params=dict(best.best_params) if best else {},
                fixed=dict(StudySpec.model_validate(tune.spec).fixed) if tune else {},
                epochs=spec.workload.epochs,
                steps_per_epoch=steps or 1,
                trials=trials,
                reruns=reruns,
                importances=_mean_importances(importances),
                repeats=repeats,
                epochs_spent=sum(r.epochs_spent for r in repeats),
                problems=problems,
            )
        )
    return ComparisonResult(
        name=spec.name,
        workload=spec.workload.model_dump(mode="json"),
        objective=spec.objective.metric,
        arms=arms,
        target_val_acc=spec.target_val_acc,
        rerun_metric=RERUN_METRIC,
        curve_metric=Metric.VAL_ACC.value,
        tuning_repeats=spec.repeats_max,
        range_check=spec.range_check.mode,
        repeats_min=spec.repeats_min,
        margin=spec.margin,
        primary=spec.primary,
    )


def _repeat_record(repeat: int, tuning: list[StudyRecord], trials: list[TrialRecord], sign: float) -> RepeatRecord:
    """One repeat: its stored spending, its winner (best COMPLETE trial over its studies) and its ranges.

    A range is the tuning study's searched one, or the range check's final one (``outcome["range_check"]``) where it
    was extended; the winner's position in it is computed here, in log space for a log range.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE.name and t.value is not None]
    # the best value; among equals the earlier study, then the earlier trial (``trials`` is in that order), as the
    # re-runs' top_configs picks it
    order = min(range(len(complete)), key=lambda i: (sign * complete[i].value, i), default=None)  # type: ignore[operator]
    winner = None if order is None else complete[order]
    tune = next(s for s in tuning if s.role == ComparisonPhase.TUNE)
    checked = (tune.outcome or {}).get("range_check") or {}
    ranges = {}
    for name, p in StudySpec.model_validate(tune.spec).search_space.items():
        if p.type == "categorical":
            continue
        record = checked.get(name) or {}
        low, high = float(record.get("final_low", p.low)), float(record.get("final_high", p.high))
        value = winner.params.get(name) if winner else None
        position = None if value is None else range_position(float(value), low, high, bool(p.log))
        ranges[name] = ParamRange(
            low,
            high,
            bool(p.log),
            value,
            position,
            position is not None and at_edge(position),  # the range check's rule, log or linear
            bool(record.get("extended")),
        )
    return RepeatRecord(
        repeat=repeat,
        studies=[s.id for s in tuning],
        epochs_spent=sum(s.epochs_spent or 0 for s in tuning),
        best_value=winner.value if winner else None,
        best_params=dict(winner.params) if winner else {},
        ranges=ranges,
    )


def _mean_importances(per_study: list[dict[str, float]]) -> dict[str, float]:
    """Each parameter's importance averaged over the repeats that have importances."""
    have = [d for d in per_study if d]
    keys = sorted({k for d in have for k in d})
    return {k: sum(d.get(k, 0.0) for d in have) / len(have) for k in keys}
