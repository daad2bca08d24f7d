"""A comparison's plan before it runs (``POST /v1/comparisons`` with ``"dry_run": true``): what it will spend, how
long it should take, and the smallest difference each verdict can detect. Nothing is stored, queued or trained.

**Spending** per arm × batch size, as ``[min, max]`` (what tuning repeats, range-check extensions and failures do
depends on the data): studies, trials, epochs and optimizer steps.

- min: ``repeats_min`` tuning repeats, no extension; every tuning study runs its ``n_trials`` full trials (with
  HyperBand, each may stop at its first rung, ``grace_period`` epochs), and each repeat's top ``rerun.top_k``
  configs are re-run on ``rerun.seeds`` seeds at full epochs.
- max: ``repeats_max`` repeats, each with ``range_check.max_extensions`` extensions (mode ``extend``) that spend what
  a tuning study does (``budget.epochs``), and the same re-runs.
- steps = epochs × steps per epoch, where steps per epoch come from a stored trial of the same workload key (the
  workload but for ``epochs``, and the batch size) on this service; unknown (None) before one has run.

**Wall time** for ``workers`` workers: every epoch above at the mean seconds per epoch of the stored trials of the
same workload key (``wall_seconds / epochs_run``), else the spec's ``assumed_epoch_s``; plus each study's overhead
beyond its trials (start-up, storage; measured on the same stored studies as ``finished_at − started_at`` minus its
trials' seconds, else :data:`WARM_STUDY_OVERHEAD_S` with ``scheduler: none``, :data:`STUDY_OVERHEAD_S` with one);
divided by ``workers`` (the phases wait for each other, so with many workers this is a lower bound).

**MDD** per verdict (R6): ``(t(1 − α_K/2, ν) + t(0.8, ν)) · s / √n_max`` with ``α_K`` the final look's level (0.9 ·
α/m when ``repeats_min < repeats_max``, else α/m; m the number of primary verdicts, or of all verdicts),
``n_max = repeats_max``, ``s`` the SD of the per-repeat differences pooled over the verdicts of stored comparisons of
the same workload key and batch size (ν their pooled df), else the spec's ``assumed_sd_pp`` (ν = n_max − 1); None
where neither exists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from search_spaces.comparison import ComparisonSpec, ComparisonWorkload
from search_spaces.spec import Workload

from ..models import ComparisonRecord, StudyRecord, StudyState
from ..optuna_queries import trial_timings
from .stats import ALPHA, look_alphas, minimum_detectable_difference, pooled_sd

__all__ = [
    "STUDY_OVERHEAD_S",
    "WARM_STUDY_OVERHEAD_S",
    "ArmPlan",
    "ComparisonPlan",
    "VerdictPlan",
    "plan",
    "workload_key",
]

#: Seconds a study costs beyond its trials where no stored study of the workload says: a Ray Tune run's start-up
#: (a study with a scheduler), or the warm runners' hand-over (``scheduler: none``; measured 0.02 s median start-up,
#: plus the claim and the comparison's advance: ``benchmarks/comparison_throughput.py``).
STUDY_OVERHEAD_S = 10.0
WARM_STUDY_OVERHEAD_S = 1.0
#: Stored studies (newest first) and comparisons read for timings and spreads.
_HISTORY = 500

Range = list[int]


@dataclass
class ArmPlan:
    """One arm at one batch size: ``[min, max]`` of what it will spend (module docstring)."""

    arm: str
    optimizer: str
    batch_size: int
    studies: Range
    trials: Range
    epochs: Range
    steps: Range | None
    steps_per_epoch: int | None
    tuning_trials_per_study: int
    tuning_epochs_per_study: int


@dataclass
class VerdictPlan:
    """One verdict's expected power: the MDD in percentage points (None: no spread known)."""

    batch_size: int
    arm: str
    against: str
    primary: bool
    alpha: float  # the final look's level α_K
    n_max: int
    sd_pp: float | None
    df: float | None
    sd_source: str  # "stored (k comparisons)", "assumed_sd_pp" or "unknown"
    mdd_pp: float | None


@dataclass
class ComparisonPlan:
    """The whole plan (``dry_run: true``'s answer)."""

    name: str
    workers: int
    arms: list[ArmPlan]
    verdicts: list[VerdictPlan]
    totals: dict[str, Range | None]
    wall_time_s: list[float] | None
    epoch_seconds: dict[int, dict[str, Any]]  # batch size -> {"seconds", "source"}
    study_overhead_s: float
    notes: list[str] = field(default_factory=list)
    dry_run: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def workload_key(workload: dict[str, Any]) -> dict[str, Any]:
    """What makes two workloads train alike per epoch: the workload but for ``epochs`` and ``batch_size``."""
    return {k: v for k, v in workload.items() if k not in ("epochs", "batch_size")}


def _stored_key(workload: dict[str, Any], model: type[Workload] = Workload) -> dict[str, Any] | None:
    """The :func:`workload_key` of a stored workload, read as this version reads it (fields added since it was
    stored take their defaults, so a service keeps its history across upgrades); None if it no longer validates."""
    try:
        return workload_key(model.model_validate(workload).model_dump(mode="json"))
    except ValueError:
        return None


def plan(session: Session, spec: ComparisonSpec, workers: int = 1) -> ComparisonPlan:
    """The plan of ``spec`` from what this service has stored (module docstring). Reads only."""
    key = workload_key(spec.workload.model_dump(mode="json"))
    timings, overheads = _stored_timings(session, key)
    spreads = _stored_spreads(session, key)
    r_min, r_max = spec.repeats_min, spec.repeats_max
    extensions = spec.range_check.max_extensions if spec.range_check.mode == "extend" else 0
    n_trials, epochs, budget = spec.n_trials, spec.workload.epochs, spec.epoch_budget
    per_trial_min = spec.scheduler.grace_period if spec.scheduler.name == "hyperband" else epochs
    tune_min = min(budget, n_trials * per_trial_min)
    reruns = spec.rerun.top_k
    rerun_epochs = reruns * spec.rerun.seeds * epochs
    notes = []
    arms, seconds = [], [0.0, 0.0]
    epoch_seconds: dict[int, dict[str, Any]] = {}
    default = WARM_STUDY_OVERHEAD_S if spec.scheduler.name == "none" else STUDY_OVERHEAD_S
    overhead = float(np.mean(overheads)) if overheads else default
    wall_known = True
    for bs in spec.batch_sizes:
        mine = timings.get(bs, [])
        if mine:
            per_epoch = sum(t["seconds"] for t in mine) / sum(t["epochs"] for t in mine)
            epoch_seconds[bs] = {"seconds": per_epoch, "source": f"stored ({len(mine)} trials)"}
        elif spec.assumed_epoch_s is not None:
            epoch_seconds[bs] = {"seconds": spec.assumed_epoch_s, "source": "assumed_epoch_s"}
        else:
            epoch_seconds[bs] = {"seconds": None, "source": "unknown"}
            wall_known = False
        steps_per_epoch = next((t["steps_per_epoch"] for t in mine if t["steps_per_epoch"]), None)
        for arm in spec.arms:
            studies = [r_min * (1 + reruns), r_max * (1 + extensions + reruns)]
            trials = [
                r_min * (n_trials + reruns * spec.rerun.seeds),
                r_max * ((1 + extensions) * n_trials + reruns * spec.rerun.seeds),
            ]
            spent = [r_min * (tune_min + rerun_epochs), r_max * ((1 + extensions) * budget + rerun_epochs)]
            arms.append(
                ArmPlan(
                    arm=arm.name,
                    optimizer=arm.optimizer,
                    batch_size=bs,
                    studies=studies,
                    trials=trials,
                    epochs=spent,
                    steps=None if steps_per_epoch is None else [e * steps_per_epoch for e in spent],
                    steps_per_epoch=steps_per_epoch,
                    tuning_trials_per_study=n_trials,
                    tuning_epochs_per_study=budget,
                )
            )
            if epoch_seconds[bs]["seconds"] is not None:
                for i in (0, 1):
                    seconds[i] += spent[i] * epoch_seconds[bs]["seconds"] + studies[i] * overhead
    order = [a.name for a in spec.arms]
    arms.sort(key=lambda a: (order.index(a.arm), a.batch_size))  # arms outer, as the comparison's resource lists them
    if any(a.steps is None for a in arms):
        notes.append(
            "steps per epoch are known once a trial of this workload has run at that batch size on this service"
        )
    if not wall_known:
        notes.append("no stored trial of this workload at some batch size and no assumed_epoch_s: no wall time")
    verdicts = _verdict_plans(spec, spreads)
    if any(v.mdd_pp is None for v in verdicts):
        notes.append("no stored spread of this workload at some batch size and no assumed_sd_pp: no MDD there")
    totals: dict[str, Range | None] = {
        k: [sum(getattr(a, k)[0] for a in arms), sum(getattr(a, k)[1] for a in arms)]
        for k in ("studies", "trials", "epochs")
    }
    totals["steps"] = (
        None if any(a.steps is None for a in arms) else [sum(a.steps[0] for a in arms), sum(a.steps[1] for a in arms)]  # type: ignore[index]
    )
    return ComparisonPlan(
        name=spec.name,
        workers=workers,
        arms=arms,
        verdicts=verdicts,
        totals=totals,
        wall_time_s=[seconds[0] / workers, seconds[1] / workers] if wall_known else None,
        epoch_seconds=epoch_seconds,
        study_overhead_s=overhead,
        notes=notes,
    )


def _verdict_plans(spec: ComparisonSpec, spreads: dict[int, list[tuple[float, int]]]) -> list[VerdictPlan]:
    test, *others = [a.name for a in spec.arms]
    primary = spec.primary_labels
    m = len(primary) * len(spec.batch_sizes)
    alpha_k = look_alphas(ALPHA, m, spec.repeats_min, spec.repeats_max)[spec.repeats_max]  # the last look's (R6)
    n = spec.repeats_max
    out = []
    for bs in spec.batch_sizes:
        stored = [(sd, k) for sd, k in spreads.get(bs, []) if k >= 2]
        if stored:
            sd, df = pooled_sd([x for x, _ in stored], [k for _, k in stored])
            source = f"stored ({len(stored)} verdicts)"
        elif spec.assumed_sd_pp is not None:
            sd, df, source = spec.assumed_sd_pp, None, "assumed_sd_pp"
        else:
            sd, df, source = None, None, "unknown"
        for other in others:
            is_primary = other in primary
            level = alpha_k if is_primary else ALPHA
            mdd = None if sd is None or n < 2 else minimum_detectable_difference(sd, n, level, df=df)
            out.append(VerdictPlan(bs, test, other, is_primary, level, n, sd, df, source, mdd))
    return out


def _stored_timings(session: Session, key: dict[str, Any]) -> tuple[dict[int, list[dict[str, Any]]], list[float]]:
    """Trial timings by batch size, and per-study overheads, of the stored SUCCEEDED studies of workload ``key``."""
    rows = session.scalars(
        sa.select(StudyRecord)
        .where(StudyRecord.state == StudyState.SUCCEEDED.value)
        .order_by(StudyRecord.created_at.desc())
        .limit(_HISTORY)
    ).all()
    mine = [s for s in rows if _stored_key(s.spec.get("workload") or {}) == key]
    timings = trial_timings(session, [s.name for s in mine])
    by_study: dict[str, list[dict[str, Any]]] = {}
    for t in timings:
        by_study.setdefault(t["study"], []).append(t)
    out: dict[int, list[dict[str, Any]]] = {}
    overheads = []
    for s in mine:
        found = by_study.get(s.name, [])
        out.setdefault(int(s.spec["workload"]["batch_size"]), []).extend(found)
        if found and s.started_at and s.finished_at:
            overheads.append(
                max(0.0, (s.finished_at - s.started_at).total_seconds() - sum(t["seconds"] for t in found))
            )
    return out, overheads


def _stored_spreads(session: Session, key: dict[str, Any]) -> dict[int, list[tuple[float, int]]]:
    """Per batch size, ``(SD in pp, repeats)`` of each stored verdict's per-repeat differences (first arm − other;
    each repeat's mean over the seeds both arms share) in the SUCCEEDED comparisons of workload ``key``."""
    rows = session.scalars(
        sa.select(ComparisonRecord)
        .where(ComparisonRecord.state == StudyState.SUCCEEDED.value)
        .order_by(ComparisonRecord.created_at.desc())
        .limit(_HISTORY)
    ).all()
    out: dict[int, list[tuple[float, int]]] = {}
    for record in rows:
        result = record.result or {}
        if _stored_key(result.get("workload") or {}, ComparisonWorkload) != key:
            continue
        arms = result.get("arms") or []
        labels = list(dict.fromkeys(a["label"] for a in arms))
        for bs in sorted({a["batch_size"] for a in arms}):
            table = {a["label"]: _scores(a) for a in arms if a["batch_size"] == bs}
            test = table.get(labels[0], {}) if labels else {}
            for other in labels[1:]:
                d = _differences(test, table.get(other, {}))
                if len(d) >= 2:
                    out.setdefault(bs, []).append((float(np.std(d, ddof=1)) * 100, len(d)))
    return out


def _scores(arm: dict[str, Any]) -> dict[int, dict[int, float]]:
    table: dict[int, dict[int, float]] = {}
    for r in arm.get("reruns") or []:
        if r.get("rank", 1) == 1:
            table.setdefault(int(r.get("repeat", 0)), {})[int(r["seed"])] = float(r["score"])
    return table


def _differences(a: dict[int, dict[int, float]], b: dict[int, dict[int, float]]) -> list[float]:
    out = []
    for repeat in sorted(set(a) & set(b)):
        seeds = sorted(set(a[repeat]) & set(b[repeat]))
        if seeds:
            out.append(float(np.mean([a[repeat][s] - b[repeat][s] for s in seeds])))
    return out
