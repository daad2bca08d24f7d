"""The comparison spec: optimizers × batch sizes on one workload, one budget for every arm, and its expansion.

A comparison asks one question: *on this workload and batch size, is the first arm (the optimizer under test,
TVLARS in the presets) better than each of the others once every arm has been tuned on the same budget?*
:class:`ComparisonSpec` states it; :func:`expand` turns it into one study spec per tuning repeat × arm × batch size,
each of which :class:`search_spaces.spec.StudySpec` validates. These rules, each the same for every arm, make the
studies comparable:

**Same budget, spent in full.** Every tuning study gets the same ``budget.epochs``: the epochs its trials may spend
in total, pruned and failed trials included (the worker starts a trial only while its full epochs fit). There is no
early stopping by default (``scheduler: none``), so every trial runs its full epochs and the trial count follows
from the budget (``n_trials`` = ``budget.epochs // workload.epochs`` unless given). Pruning is allowed only where a
rung compares peers — synchronous HyperBand; ASHA, the median rule and PBT are refused with the reason (with one
trial at a time ASHA's first trial has no peer and always finishes, and every later one must beat it early).
``budget.epochs`` defaults to ``n_trials × workload.epochs`` (8 trials without either).

**Same starting points.** Each arm's search starts with its official configuration at that batch size enqueued
(:func:`reference_points`): ``lr`` at the centre of its range, TVLARS's λ from the paper grid; TVLARS also with its
λ → 0 point, where it trains as LARS at ``lr`` / (α + 1) — TVLARS's space contains LARS's, so a tuned TVLARS clearly
below tuned LARS means its search failed.

**TVLARS's schedule in units of training.** TVLARS arms search ``lam_steps`` (λ × the trial's total optimizer
steps, log 0.05–50) and ``delay_fraction`` (d_e as a share of the steps, 0–0.5), which the trainer converts for the
batch size and epochs at hand, so one range means one family of φ curves over training at every batch size. Raw
``lam``/``delay_epochs`` remain for the paper presets (and for an arm's own ``search_space``).

**Range check that can fail** (``range_check: {mode, max_extensions}``, :func:`range_check`; R9): after tuning,
each arm × repeat's winner is placed in the range last searched (log space for a log range); a value in the outer
10 % of a range, log or linear, is on the edge. With ``mode: extend`` (default), at a batch size where some winner
lies on an edge that can widen, every arm × repeat there gets an extension study (:func:`extension_spec`) with a
tuning study's trials and epochs over its ranges widened at the edge: one decade that way for a log range, to the
hard bound (:data:`HARD_BOUNDS`) for a linear one (``delay_fraction`` at 0 is already at its bound: it stays a
flagged edge). The check runs again after each round of extensions, up to ``max_extensions`` (default 2); a winner
still on an edge then makes the verdict carry "optimum at the edge of the searched range". ``mode: flag`` only
records it. Extension ``e`` of repeat ``r`` is ``<study>-x<e>``, trains with seeds ``seed + r · 10 000 + e · 1 000 +
n`` and samples with ``sampler.seed + e · 160``: no collision with another repeat's or extension's seeds. (An
extension spends what a tuning study does, so ``budget.extension_epochs`` is no longer used: a submit that sets it
is refused; a stored spec that has it still loads.) No arm's range is moved by hand.

**Tuning variance, and the unit of replication** (R1). ``tuning_repeats`` independent tunings per arm × batch size:
repeat ``r`` samples with seed ``sampler.seed + r · MAX_BATCH_SIZES + i`` and trains trial ``n`` with seed ``seed + r
· REPEAT_SEED_STRIDE + n``, the same in every arm. The tuning repeat is the unit of replication: each repeat's winner
is re-run on seeds nested in the repeat and shared by every arm, ``RERUN_SEED_BASE + r · S + j`` (S =
:data:`MAX_RERUN_SEEDS`, :func:`rerun_seeds`), never used while tuning; so two repeats never share a seed effect,
and the arms of one repeat are compared seed by seed. Every trial stores the seed it trained with (the trial
attribute ``train_seed``), so all of this can be checked from storage alone.

**Same random stream, tuning you can describe** (R8). Within a repeat, the study at batch-size index ``i`` gets the
same sampler seed in every arm, and trial ``n`` of each arm starts from the same initial weights and sees the same
data order. The default sampler is ``sobol``: scrambled Sobol' points with dimensions in the space's order (``lr``
first, then the arm's others), each dimension scrambled from (seed, dimension), one scramble per repeat; so every
arm of a repeat draws the same ``lr`` quantiles whatever else it searches, and enqueued reference points use no
point. TPE (``sampler: {name: tpe}``) stays a choice. The report counts the trials of each kind (reference,
quasi-random, random, TPE, extension) per arm.

**Matched search widths.** The ``lr`` range of every arm is a log range ``lr_decades`` decades wide (default 2),
centred on the arm's reference LR at that batch size, ``[c · 10^(−w/2), c · 10^(+w/2)]``. The centre ``c`` follows
the arm's scaling rule:

- ``lr_scaling: none`` (TVLARS, LARS, LAMB by default) — ``lr`` is the absolute LR. The centre is the geometric mean
  of the paper preset's LR grid at that batch size (``paper-cifar10-resnet18-bs{B}-{optimizer}``; LARS without
  warm-up uses TVLARS's grid, as TVLARS is LARS times φ), interpolated linearly in log LR against log batch size
  between the presets' batch sizes and held constant beyond the ends (512 and 32768).
- ``lr_scaling: linear_256`` (LARS with warm-up by default) — the searched value is a base LR per 256 examples and
  the effective LR is ``base · batch_size / 256`` (Goyal et al.'s linear scaling rule, the paper's warm-up
  baseline). The centre is the geometric mean of the paper's warm-up grid (0.1, 0.3, 0.5), the same at every batch
  size. ``lars_warmup`` applies ``bs/256`` inside the trainer, so its range is written as base LRs; for any other
  optimizer the range is written already multiplied by ``bs/256``.

An arm's ``lr_center`` overrides the centre (for an optimizer without a paper preset): one number for every batch
size, or a ``{batch_size: lr}`` mapping interpolated as above. ``lr`` itself is never given in an arm's
``search_space`` or ``fixed``: its range is what this module matches. An arm's other searched parameters default to
the paper grid's (TVLARS: ``lam_steps`` and ``delay_fraction`` as above); its fixed values default to the paper
presets' (the official code's settings; TVLARS's without ``lam`` and ``delay_epochs``), with LARS's warm-up the
paper's 20 % of ``workload.epochs``. Arms may search more knobs than others: that costs them budget, which is the
point of an equal budget.

>>> spec = load_comparison_preset("compare-mnist1d-cpu")
>>> [(s.arm.name, s.batch_size, s.repeat) for s in expand(spec)][:2]
[('tvlars', 128, 0), ('tvlars', 1024, 0)]
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tvlars.train import OPTIMIZERS

from . import load as load_study_preset
from . import merge, names
from .spec import (
    METRICS,
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    Resources,
    Scheduler,
    StudySpec,
    Workload,
)

__all__ = [
    "DEFAULT_METRIC",
    "LR_SCALINGS",
    "RERUN_SEED_BASE",
    "Arm",
    "ArmStudy",
    "ComparisonBudget",
    "ComparisonObjective",
    "ComparisonSampler",
    "ComparisonSpec",
    "ComparisonWorkload",
    "EXTENSION_SEED_STRIDE",
    "HARD_BOUNDS",
    "MAX_EXTENSIONS",
    "RangeCheck",
    "Rerun",
    "default_lr_center",
    "expand",
    "list_comparison_presets",
    "load_comparison_preset",
    "lr_range",
    "extension_spec",
    "widened",
    "range_check",
    "reference_lam_steps",
    "reference_points",
    "rerun_seed_base",
    "rerun_seeds",
]

_DIR = Path(__file__).resolve().parent / "comparisons"

#: How an arm's searched ``lr`` relates to the LR the optimizer uses.
LR_SCALINGS = ("none", "linear_256")
#: Comparisons select on validation; the trainer's held-out split reports ``val_acc``. Where this trainer predates
#: the split, the study specs' vocabulary lacks it and the default is the test accuracy the trainer does report.
DEFAULT_METRIC = "val_acc" if "val_acc" in METRICS else "test_acc"
#: Re-run seeds start here: tuning trials use ``seed + trial number``, far below it.
RERUN_SEED_BASE = 1_000_000
MAX_ARMS = 8
MAX_BATCH_SIZES = 16
MAX_RERUN_SEEDS = 32
MAX_TUNING_REPEATS = 10
#: Tuning repeat ``r`` trains trial ``n`` with seed ``seed + r · REPEAT_SEED_STRIDE + n`` (below the re-run seeds).
REPEAT_SEED_STRIDE = 10_000
#: What the range check does with an optimum in the outer 10 % of its range.
RANGE_CHECKS = ("extend", "flag")
#: At most this many range-check extensions per tuning study (``range_check.max_extensions``).
MAX_EXTENSIONS = 5
#: Extension ``e`` of repeat ``r`` trains trial ``n`` with seed ``seed + r · REPEAT_SEED_STRIDE + e ·
#: EXTENSION_SEED_STRIDE + n``: above every tuning trial (``n`` < 1000) and below repeat ``r + 1``'s seeds.
EXTENSION_SEED_STRIDE = 1_000
#: Comparison names leave room for "-<arm>-bs<batch size>-t<repeat>-x-r<rank>" within a study name's 128 characters.
COMPARISON_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,71}$"
ARM_LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"

#: The optimizer whose paper preset grid gives an arm's default LR centre and fixed values.
_PRESET_OF = {"tvlars": "tvlars", "lars": "tvlars", "lars_warmup": "lars-warmup", "lamb": "lamb"}
_PAPER_PRESET = "paper-cifar10-resnet18-bs{bs}-{optimizer}"
_DEFAULT_SCALING = {"lars_warmup": "linear_256"}
#: The paper warms LARS up for 20 of its 100 epochs.
_PAPER_WARMUP_FRACTION = 0.2
#: The paper's runs: 100 epochs over CIFAR-10's 50 000 training rows (what its λ grids were chosen for).
_PAPER_EPOCHS, _PAPER_TRAIN_ROWS = 100, 50_000
#: TVLARS's schedule searched in units of training: λ × total steps (0.05: φ falls 4 % over training, nearly LARS;
#: 50: φ is at its floor by a tenth of training) and the delay as a share of training (0 to half of it).
_TVLARS_SPACE = {
    "lam_steps": FloatParam(type="float", low=0.05, high=50.0, log=True),
    "delay_fraction": FloatParam(type="float", low=0.0, high=0.5),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComparisonWorkload(Workload):
    """The workload every study trains; its batch size comes from the comparison's ``batch_sizes``. ``drop_last``
    defaults to true here, so every optimizer step sees a full batch (steps per epoch = train rows // batch size)."""

    batch_size: int | None = Field(default=None, exclude=True)  # type: ignore[assignment]
    drop_last: bool = Field(
        default=True, description="True: every step sees a full batch (the last partial one is dropped)"
    )

    @field_validator("batch_size")
    @classmethod
    def _no_batch_size(cls, v: int | None) -> None:
        if v is not None:
            raise ValueError("set by the comparison's batch_sizes, not here")
        return None


class Arm(_Strict):
    """One optimizer to compare: its search space and fixed values default to the paper presets'."""

    optimizer: Literal[OPTIMIZERS]  # type: ignore[valid-type]
    label: str | None = Field(default=None, pattern=ARM_LABEL_PATTERN, description="Defaults to the optimizer")
    search_space: dict[str, Param] | None = Field(
        default=None, description="Parameters besides lr; None: the paper preset's (TVLARS: lam)"
    )
    fixed: dict[str, Any] | None = Field(default=None, description="None: the paper preset's fixed values")
    lr_scaling: Literal[LR_SCALINGS] | None = Field(  # type: ignore[valid-type]
        default=None, description="none: absolute LR; linear_256: base LR × batch_size / 256. None: the optimizer's"
    )
    lr_center: float | dict[int, float] | None = Field(
        default=None, description="The LR range's geometric centre, or {batch_size: centre}; None: the paper's grid"
    )

    @field_validator("search_space", "fixed")
    @classmethod
    def _no_lr(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and "lr" in v:
            raise ValueError("lr's range is built by the comparison (lr_center, lr_decades): set those instead")
        return v

    @field_validator("lr_center")
    @classmethod
    def _positive_center(cls, v: float | dict[int, float] | None) -> float | dict[int, float] | None:
        values = list(v.values()) if isinstance(v, dict) else [] if v is None else [v]
        keys = list(v) if isinstance(v, dict) else []
        if isinstance(v, dict) and not v:
            raise ValueError("a {batch_size: lr} mapping needs at least one entry")
        if any(not (math.isfinite(x) and x > 0) for x in values):
            raise ValueError("LR centres must be finite and > 0")
        if any(k < 1 for k in keys):
            raise ValueError("batch sizes must be >= 1")
        return v

    @property
    def name(self) -> str:
        """The arm's label: ``label`` or else the optimizer's name."""
        return self.label or self.optimizer

    @property
    def scaling(self) -> str:
        """The arm's LR scaling rule, its own or its optimizer's default."""
        return self.lr_scaling or _DEFAULT_SCALING.get(self.optimizer, "none")


class ComparisonBudget(_Strict):
    """One budget for every arm × batch size: total epochs (pruned and failed count, the binding one), trials,
    concurrency, and the range check's extra epochs."""

    n_trials: int | None = Field(
        default=None,
        ge=1,
        le=1_000,
        description="A cap on finished trials; None: as many as epochs pay for (epochs binds). With neither: 8",
    )
    epochs: int | None = Field(
        default=None, ge=1, description="Epochs a study may spend over all its trials; None: n_trials × epochs"
    )
    extension_epochs: int | None = Field(
        default=None,
        ge=1,
        description="Deprecated and ignored (kept so stored specs still load): a range-check extension spends what a "
        "tuning study does (epochs, n_trials). A submit that sets it is refused",
    )
    max_concurrent: int = Field(default=1, ge=1, le=1024)
    max_failed: int = Field(default=3, ge=0, le=1_000)


class ComparisonSampler(_Strict):
    """The Optuna sampler of every study; batch-size index ``i`` of repeat ``r`` samples with ``seed + r · 16 + i``
    in every arm. ``sobol`` (default): scrambled Sobol' points, dimensions in the space's order (``lr`` first), one
    scramble per repeat, so every arm of a repeat draws the same ``lr`` quantiles (``service.engine.sobol``)."""

    name: Literal["sobol", "tpe", "random", "cmaes", "gp", "qmc"] = "sobol"
    seed: int = Field(default=0, ge=0, le=2**31 - 1 - MAX_BATCH_SIZES * MAX_TUNING_REPEATS * (MAX_EXTENSIONS + 1))
    options: dict[str, Any] = Field(default_factory=dict)


class ComparisonObjective(_Strict):
    """What tuning selects on (validation, by default) and which way is better."""

    metric: str = Field(default=DEFAULT_METRIC, description="A trial result the study spec knows")
    direction: Literal["maximize", "minimize"] | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r} (choose from {', '.join(METRICS)})")
        return v

    @model_validator(mode="after")
    def _default_direction(self) -> ComparisonObjective:
        if self.direction is None:
            self.direction = METRICS[self.metric]
        return self


class Rerun(_Strict):
    """After tuning: the ``top_k`` configs of each arm (by the objective) re-trained on ``seeds`` fresh seeds."""

    top_k: int = Field(default=1, ge=1, le=10)
    seeds: int = Field(default=3, ge=1, le=MAX_RERUN_SEEDS, description="1 gives no confidence interval")


class RangeCheck(_Strict):
    """What the range check does with an optimum on its range's edge (module docstring)."""

    mode: Literal[RANGE_CHECKS] = Field(  # type: ignore[valid-type]
        default="extend", description="extend: search the widened range; flag: mark the edge only"
    )
    max_extensions: int = Field(
        default=2, ge=0, le=MAX_EXTENSIONS, description="Extensions per tuning study before the edge is reported"
    )


#: Schedulers a comparison may use. Pruning is fair only where a rung compares peers: synchronous HyperBand pauses
#: every trial of a bracket at its rung and stops the worse ones together.
PEER_SCHEDULERS = ("none", "hyperband")
_NO_PEERS = {
    "asha": "ASHA stops a trial by the trials that reached its rung before it",
    "median": "the median rule stops a trial by the trials that ran before it",
    "pbt": "PBT replaces members' configs mid-training, so no trial is one config trained in full",
}


class ComparisonSpec(_Strict):
    """A fair comparison of optimizers. See the module docstring for how it becomes studies."""

    name: str = Field(pattern=COMPARISON_NAME_PATTERN, description="Unique name: letters, digits, '.', '_', '-'")
    description: str = Field(default="", max_length=2_000)
    workload: ComparisonWorkload
    arms: list[Arm] = Field(min_length=2, max_length=MAX_ARMS, description="The first arm is the one under test")
    batch_sizes: list[int] = Field(min_length=1, max_length=MAX_BATCH_SIZES)
    budget: ComparisonBudget = Field(default_factory=ComparisonBudget)
    sampler: ComparisonSampler = Field(default_factory=ComparisonSampler)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    objective: ComparisonObjective = Field(default_factory=ComparisonObjective)
    rerun: Rerun = Field(default_factory=Rerun)
    target_val_acc: float | None = Field(default=None, gt=0, le=1, description="For time-to-target; None: none")
    lr_decades: float = Field(default=2.0, gt=0, le=6, description="Width of every arm's log LR range")
    resources: Resources = Field(default_factory=Resources)
    seed: int = Field(default=0, ge=0, lt=RERUN_SEED_BASE // 2, description="Tuning trial n trains with seed + n")
    tuning_repeats: int = Field(
        default=3,
        ge=1,
        le=MAX_TUNING_REPEATS,
        description="Independent tunings of every arm × batch size (other sampler and trial seeds); each one's "
        "winner is re-run on the shared fresh seeds",
    )
    assumed_epoch_s: float | None = Field(
        default=None,
        gt=0,
        description="For the plan (dry run): seconds per training epoch where this service has no stored trial of "
        "the workload at a batch size; None: the plan gives no wall time there",
    )
    assumed_sd_pp: float | None = Field(
        default=None,
        gt=0,
        description="For the plan (dry run): the SD (percentage points) of a verdict's per-repeat differences where "
        "no stored comparison of the workload at a batch size has one; None: the plan gives no MDD there",
    )
    range_check: RangeCheck = Field(
        default_factory=lambda: RangeCheck(),
        description="{mode, max_extensions} (or the mode alone): an optimum in the outer 10 % of a range is extended "
        "(extend: a tuning study's trials over the range widened that way, for every arm × repeat at that batch "
        "size; up to max_extensions times) or only flagged (flag)",
    )

    @field_validator("range_check", mode="before")
    @classmethod
    def _range_check_mode(cls, v: Any) -> Any:
        return {"mode": v} if isinstance(v, str) else v

    @field_validator("batch_sizes")
    @classmethod
    def _ladder(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > 1_048_576 for b in v):
            raise ValueError("batch sizes must be in 1..1048576")
        if len(set(v)) != len(v):
            raise ValueError("batch sizes must be distinct")
        if v != sorted(v):
            raise ValueError("list batch sizes from small to large")
        return v

    @field_validator("scheduler")
    @classmethod
    def _peers(cls, v: Scheduler, info: ValidationInfo) -> Scheduler:
        if v.name in PEER_SCHEDULERS:
            return v
        budget = info.data.get("budget")
        at_once = budget.max_concurrent if budget is not None else 1
        raise ValueError(
            f"{v.name!r} cannot prune a comparison's trials: {_NO_PEERS.get(v.name, 'its rungs do not compare peers')}"
            f" (with max_concurrent {at_once}, the first trial has no peer and every later one must beat it early), "
            "so arms would be selected on who drew a good first config. Use 'none' (every trial runs its full "
            "epochs; budget.epochs binds) or 'hyperband' (synchronous: a rung compares its whole bracket)"
        )

    @field_validator("arms")
    @classmethod
    def _distinct_arms(cls, arms: list[Arm]) -> list[Arm]:
        labels = [a.name for a in arms]
        clashes = sorted({x for x in labels if labels.count(x) > 1})
        if clashes:
            raise ValueError(f"arm labels must be distinct ({', '.join(clashes)} repeated): give each a label")
        return arms

    @model_validator(mode="after")
    def _check_whole(self) -> ComparisonSpec:
        epochs = self.workload.epochs
        if self.budget.epochs is not None and self.budget.epochs < epochs:
            raise ValueError(f"budget.epochs ({self.budget.epochs}) cannot pay for one full trial ({epochs} epochs)")
        if self.rerun.top_k > self.n_trials:
            raise ValueError(f"rerun.top_k ({self.rerun.top_k}) exceeds the trials a study runs ({self.n_trials})")
        for i, arm in enumerate(self.arms):
            if arm.lr_center is None and arm.scaling != _DEFAULT_SCALING.get(arm.optimizer, "none"):
                raise ValueError(f"arms[{i}] ({arm.name}): lr_scaling {arm.scaling!r} needs an lr_center")
            if arm.lr_center is None and arm.optimizer not in _PRESET_OF:
                raise ValueError(f"arms[{i}] ({arm.name}): no paper preset for {arm.optimizer!r}; give lr_center")
            for i_bs, bs in enumerate(self.batch_sizes):
                try:
                    StudySpec.model_validate(_study_spec(self, arm, i_bs))
                except ValidationError as e:
                    errors = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'spec'}: {x['msg']}" for x in e.errors())
                    raise ValueError(f"arms[{i}] ({arm.name}) at batch size {bs}: {errors}") from None
        return self

    @property
    def epoch_budget(self) -> int:
        """The epochs each tuning study (arm × batch size × repeat) may spend in total."""
        return self.budget.epochs or (self.budget.n_trials or _DEFAULT_TRIALS) * self.workload.epochs

    @property
    def n_trials(self) -> int:
        """Each tuning study's trial cap: as given, else as many as the epoch budget pays for (so epochs bind)."""
        return self.budget.n_trials or _trials_for(self, self.epoch_budget)

    @property
    def extension_budget(self) -> int:
        """The epochs of each range-check extension study: a tuning study's (``budget.extension_epochs`` is
        ignored)."""
        return self.epoch_budget

    @property
    def repeats_min(self) -> int:
        """The fewest tuning repeats (R4's ``{min, max}``; an integer is both)."""
        return self.tuning_repeats

    @property
    def repeats_max(self) -> int:
        """The most tuning repeats (R4's ``{min, max}``; an integer is both)."""
        return self.tuning_repeats

    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON data: what is stored and compared to detect a changed spec."""
        return self.model_dump(mode="json")


_DEFAULT_TRIALS = 8


def _trials_for(spec: ComparisonSpec, epochs: int) -> int:
    """Trials ``epochs`` pay for: full trials, or with HyperBand as many as its first rung pays for."""
    per_trial = spec.scheduler.grace_period if spec.scheduler.name == "hyperband" else spec.workload.epochs
    return max(1, min(1_000, epochs // per_trial))


@dataclass(frozen=True)
class ArmStudy:
    """One study of a comparison: an arm at a batch size, its study spec (plain data) and its epoch budget."""

    arm: Arm
    batch_size: int
    batch_index: int
    spec: dict[str, Any]
    epoch_budget: int
    repeat: int = 0


def expand(spec: ComparisonSpec) -> list[ArmStudy]:
    """One study spec per tuning repeat × arm × batch size (in that order): same seed stream and LR widths matched
    (module docstring)."""
    return [
        ArmStudy(arm, bs, i, _study_spec(spec, arm, i, r), spec.epoch_budget, r)
        for r in range(spec.tuning_repeats)
        for arm in spec.arms
        for i, bs in enumerate(spec.batch_sizes)
    ]


def rerun_seed_base(repeat: int) -> int:
    """The first re-run seed of tuning repeat ``repeat``: ``RERUN_SEED_BASE + repeat · MAX_RERUN_SEEDS``."""
    return RERUN_SEED_BASE + repeat * MAX_RERUN_SEEDS


def rerun_seeds(spec: ComparisonSpec, repeat: int = 0) -> list[int]:
    """The fresh seeds every arm's repeat-``repeat`` winner is re-trained on: ``RERUN_SEED_BASE + r · S + j`` (S =
    :data:`MAX_RERUN_SEEDS`), nested in the repeat (no two repeats share one) and shared by every arm; none is
    used in tuning."""
    return [rerun_seed_base(repeat) + j for j in range(spec.rerun.seeds)]


def lr_range(center: float, decades: float) -> tuple[float, float]:
    """``[c · 10^(−w/2), c · 10^(+w/2)]`` rounded to 6 significant digits."""
    half = 10.0 ** (decades / 2)
    return _round(center / half), _round(center * half)


def default_lr_center(optimizer: str, batch_size: int) -> float:
    """The paper grid's geometric-mean LR at ``batch_size`` (interpolated in log–log, constant beyond the ends).

    For ``lars_warmup`` this is a base LR per 256 examples (the trainer scales it); otherwise an absolute LR.
    """
    table = _paper_lr_table().get(optimizer)
    if table is None:
        raise ValueError(f"no paper preset for optimizer {optimizer!r}: give the arm an lr_center")
    return _interpolate(table, batch_size)


def _study_spec(spec: ComparisonSpec, arm: Arm, i_bs: int, repeat: int = 0) -> dict[str, Any]:
    bs = spec.batch_sizes[i_bs]
    center = _arm_center(arm, bs)
    if arm.scaling == "linear_256" and arm.optimizer != "lars_warmup":
        center *= bs / 256  # lars_warmup applies bs/256 inside the trainer; the others take the LR as written
    low, high = lr_range(center, spec.lr_decades)
    space: dict[str, Any] = {"lr": {"type": "float", "low": low, "high": high, "log": True}}
    others = arm.search_space if arm.search_space is not None else _default_space(arm.optimizer)
    space.update({k: _param_data(p) for k, p in others.items()})
    fixed = dict(arm.fixed) if arm.fixed is not None else _default_fixed(arm.optimizer, spec.workload.epochs)
    workload = spec.workload.model_dump()
    workload["batch_size"] = bs
    enqueue = reference_points(arm, bs, center, space, fixed)
    return {
        "name": f"{spec.name}-{arm.name}-bs{bs}-t{repeat}",
        "description": f"Comparison {spec.name}: arm {arm.name} ({arm.optimizer}, lr scaling {arm.scaling}) at "
        f"batch size {bs}, tuning repeat {repeat}.",
        "workload": workload,
        "optimizer": arm.optimizer,
        "search_space": space,
        "fixed": fixed,
        "objective": spec.objective.model_dump(),
        "sampler": {
            "name": spec.sampler.name,
            "seed": spec.sampler.seed + repeat * MAX_BATCH_SIZES + i_bs,
            "options": dict(spec.sampler.options),
        },
        "scheduler": spec.scheduler.model_dump(),
        "budget": {
            "n_trials": spec.n_trials,
            "epochs": spec.epoch_budget,
            "max_concurrent": spec.budget.max_concurrent,
            "max_failed": spec.budget.max_failed,
        },
        "resources": spec.resources.model_dump(),
        "enqueue": enqueue,
        "seed": spec.seed + repeat * REPEAT_SEED_STRIDE,
        "vary_seed": True,
    }


def reference_points(
    arm: Arm, batch_size: int, lr_center: float, space: dict[str, Any], fixed: dict[str, Any]
) -> list[dict[str, Any]]:
    """The configs an arm's search starts from (enqueued first, in every repeat): its official configuration at
    ``batch_size`` and, for TVLARS, its λ → 0 point.

    Official: ``lr`` at the range's centre (the paper grid's geometric mean, or the arm's ``lr_center``); TVLARS's
    ``lam_steps`` is the paper grid's geometric-mean λ times the paper's total steps at that batch size
    (:func:`reference_lam_steps`) and ``delay_fraction`` 0 (the official code has no delay); a raw ``lam`` is the
    grid's geometric mean. λ → 0: the same ``lr`` with ``lam_steps`` (or ``lam``) at the bottom of its range and no
    delay — φ then stays at 1/(α + 1) throughout, so TVLARS trains as LARS at ``lr`` × 1/(α + 1): the point that
    makes TVLARS's space contain LARS's. Values are clipped into the space; keys the space lacks are left out.
    """
    official: dict[str, Any] = {"lr": lr_center}
    lambda_zero: dict[str, Any] = {}
    if arm.optimizer == "tvlars":
        official |= {"lam_steps": reference_lam_steps(batch_size), "delay_fraction": 0.0, "delay_epochs": 0}
        official["lam"] = _interpolate(_paper_lam_table(), batch_size)
        lambda_zero = {**official}
        for key in ("lam_steps", "lam"):
            if isinstance(space.get(key), dict) and "low" in space[key]:
                lambda_zero[key] = space[key]["low"]
    points = []
    for point in (official, lambda_zero):
        clipped = {k: _clip(space[k], v) for k, v in point.items() if k in space}
        if point and clipped and clipped not in points:
            points.append(clipped)
    return points


def reference_lam_steps(batch_size: int) -> float:
    """TVLARS's official λ in units of training: the paper grid's geometric-mean λ at ``batch_size`` times the
    paper's total optimizer steps there (100 epochs of CIFAR-10's 50 000 rows), interpolated in log–log."""
    table = {
        bs: _round(lam * _PAPER_EPOCHS * math.ceil(_PAPER_TRAIN_ROWS / bs)) for bs, lam in _paper_lam_table().items()
    }
    return _interpolate(table, batch_size)


def _clip(param: dict[str, Any], value: Any) -> Any:
    if param.get("type") == "categorical":
        return value if value in param["choices"] else param["choices"][0]
    clipped = min(max(value, param["low"]), param["high"])
    return int(round(clipped)) if param.get("type") == "int" else _round(float(clipped))


# --- the range check ---------------------------------------------------------------------------------------------

#: An optimum within this share of a range's ends (in log space for a log range) is on the edge.
RANGE_EDGE = 0.1
#: The hard bounds of linear parameters the comparison searches: a linear range on its edge is widened to these
#: (a linear parameter not listed here, or already at its bound, stays a flagged edge).
HARD_BOUNDS: dict[str, tuple[float, float]] = {"delay_fraction": (0.0, 1.0), "momentum": (0.0, 1.0)}


def range_check(space: dict[str, Any], best: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Where the best value of each searched numeric parameter sits in its range.

    ``{param: {"low", "high", "log", "best", "position", "edge", "extendable"}}``: ``position`` 0 at ``low``, 1 at
    ``high`` (in log space for a log range); ``edge`` is ``"low"`` or ``"high"`` when it lies in the outer
    :data:`RANGE_EDGE` of the range, else None; ``extendable`` whether :func:`widened` can widen the range that way
    (a log range always can; a linear one up to its :data:`HARD_BOUNDS`). Categorical parameters, and those ``best``
    lacks, are left out.
    """
    out = {}
    for key, p in space.items():
        if not (isinstance(p, dict) and "low" in p and key in best):
            continue
        low, high, value, log = float(p["low"]), float(p["high"]), float(best[key]), bool(p.get("log"))
        if high <= low:
            continue
        if log:
            position = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        else:
            position = (value - low) / (high - low)
        edge = "low" if position < RANGE_EDGE else "high" if position > 1 - RANGE_EDGE else None
        out[key] = {
            "low": p["low"],
            "high": p["high"],
            "log": log,
            "best": best[key],
            "position": position,
            "edge": edge,
            "extendable": edge is not None and widened(key, p, edge) is not None,
        }
    return out


def widened(key: str, p: dict[str, Any], edge: str) -> dict[str, Any] | None:
    """Parameter ``p``'s range widened at ``edge``: one decade that way for a log range, to the hard bound
    (:data:`HARD_BOUNDS`) for a linear one; None where it cannot widen (a linear range without a known bound, or
    already at it)."""
    q = dict(p)
    if p.get("log"):
        if edge == "high":
            q["high"] = _moved(p, p["high"] * 10.0)
        else:
            q["low"] = _moved(p, p["low"] / 10.0)
        return q
    bound = HARD_BOUNDS.get(key)
    if bound is None:
        return None
    target = bound[1] if edge == "high" else bound[0]
    if (edge == "high" and p["high"] >= target) or (edge == "low" and p["low"] <= target):
        return None
    q["high" if edge == "high" else "low"] = int(target) if p.get("type") == "int" else float(target)
    return q


def extension_spec(
    tuned: dict[str, Any], edges: dict[str, str], index: int = 1, searched: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Range-check extension ``index`` (1, 2, ...) of a tuning study: the same trials and epochs as the tuning
    study (its ``budget``), over ``searched`` (the last searched ranges, the tuning study's by default) with each
    parameter in ``edges`` widened that way (:func:`widened`; one it cannot widen stays as it was), its own
    sampler and trial seeds, nothing enqueued. Every arm × repeat at a batch size gets one, edges or not.

    Name ``<tuning study>-x<index>``. Trial seeds ``tuned.seed + index · EXTENSION_SEED_STRIDE + n``: above the
    tuning study's (``n`` < 1000) and below the next repeat's (``REPEAT_SEED_STRIDE`` = 10 000 ≥ (MAX_EXTENSIONS +
    1) · 1 000). Sampler seed ``tuned + index · MAX_BATCH_SIZES · MAX_TUNING_REPEATS``: above every tuning study's,
    the same in every arm.
    """
    if not 1 <= index <= MAX_EXTENSIONS:
        raise ValueError(f"extension index {index} outside 1..{MAX_EXTENSIONS}")
    data = copy.deepcopy(tuned)
    space = copy.deepcopy(searched if searched is not None else tuned["search_space"])
    moved = {}
    for key, edge in edges.items():
        wider = widened(key, space[key], edge)
        if wider is not None:
            space[key], moved[key] = wider, edge
    data.update(
        name=f"{tuned['name']}-x{index}",
        description=f"Range-check extension {index} of {tuned['name']}"
        + (f": {', '.join(f'{k} widened at its {v} end' for k, v in sorted(moved.items()))}." if moved else "."),
        search_space=space,
        enqueue=[],
        seed=tuned["seed"] + index * EXTENSION_SEED_STRIDE,
    )
    data["sampler"] = {
        **data["sampler"],
        "seed": data["sampler"]["seed"] + index * MAX_BATCH_SIZES * MAX_TUNING_REPEATS,
    }
    return data


def _moved(p: dict[str, Any], x: float) -> float | int:
    return max(1, int(round(x))) if p.get("type") == "int" else _round(x)


def _arm_center(arm: Arm, bs: int) -> float:
    if arm.lr_center is None:
        return default_lr_center(arm.optimizer, bs)
    if isinstance(arm.lr_center, dict):
        return _interpolate(dict(arm.lr_center), bs)
    return float(arm.lr_center)


def _param_data(p: FloatParam | IntParam | CategoricalParam) -> dict[str, Any]:
    return p.model_dump(exclude_none=True)


def _interpolate(table: dict[int, float], bs: int) -> float:
    """Linear in log LR against log batch size between the table's points; constant beyond its ends."""
    points = sorted(table.items())
    if bs <= points[0][0]:
        return points[0][1]
    if bs >= points[-1][0]:
        return points[-1][1]
    for (b0, c0), (b1, c1) in zip(points, points[1:], strict=False):
        if b0 <= bs <= b1:
            t = (math.log(bs) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return _round(math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))))
    raise AssertionError("unreachable: bs lies within the table")


def _round(x: float) -> float:
    return float(f"{x:.6g}")


@cache
def _paper_presets() -> dict[str, dict[int, dict[str, Any]]]:
    """The paper presets' data by preset optimizer name and batch size."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for name in names():
        if not name.startswith("paper-cifar10-resnet18-bs"):
            continue
        bs_text, _, optimizer = name.removeprefix("paper-cifar10-resnet18-bs").partition("-")
        out.setdefault(optimizer, {})[int(bs_text)] = load_study_preset(name)
    return out


@cache
def _paper_lam_table() -> dict[int, float]:
    """The TVLARS paper grids' geometric-mean λ by batch size."""
    return {
        bs: _round(math.exp(sum(math.log(x) for x in lams) / len(lams)))
        for bs, data in _paper_presets()["tvlars"].items()
        for lams in [data["search_space"]["lam"]["choices"]]
    }


@cache
def _paper_lr_table() -> dict[str, dict[int, float]]:
    tables: dict[str, dict[int, float]] = {}
    for optimizer, preset in _PRESET_OF.items():
        tables[optimizer] = {
            bs: _round(math.exp(sum(math.log(x) for x in lrs) / len(lrs)))
            for bs, data in _paper_presets()[preset].items()
            for lrs in [data["search_space"]["lr"]["choices"]]
        }
    return tables


def _default_space(optimizer: str) -> dict[str, Any]:
    """The paper grids' non-LR parameters as continuous ranges spanning every batch size's grid."""
    presets = _paper_presets().get(_PRESET_OF.get(optimizer, ""), {})
    if optimizer == "lars":
        return {}  # LARS without warm-up has no λ: TVLARS's grid searches λ only for φ
    if optimizer == "tvlars":
        return dict(_TVLARS_SPACE)
    choices: dict[str, set[float]] = {}
    for data in presets.values():
        for key, p in data["search_space"].items():
            if key != "lr":
                choices.setdefault(key, set()).update(p["choices"])
    return {
        key: FloatParam(type="float", low=min(v), high=max(v), log=min(v) > 0) for key, v in sorted(choices.items())
    }


def _default_fixed(optimizer: str, epochs: int) -> dict[str, Any]:
    presets = _paper_presets().get(_PRESET_OF.get(optimizer, ""), {})
    if not presets:
        return {}
    fixed = copy.deepcopy(presets[min(presets)]["fixed"])
    if optimizer == "tvlars":
        for key in ("lam", "delay_epochs"):  # searched in units of training instead (lam_steps, delay_fraction)
            fixed.pop(key, None)
    if optimizer == "lars":
        # TVLARS's grid lends LARS its LR centre; its fixed values are the warm-up baseline's, without the warm-up
        fixed = copy.deepcopy(_paper_presets()["lars-warmup"][min(presets)]["fixed"])
        fixed.pop("warmup_epochs", None)
    elif optimizer == "lars_warmup":
        fixed["warmup_epochs"] = _round(_PAPER_WARMUP_FRACTION * epochs)
    return fixed


# --- presets ---------------------------------------------------------------------------------------------------------


class ComparisonPresetNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def list_comparison_presets() -> list[str]:
    """The comparison presets' names (``search_spaces/comparisons/*.yaml`` without ``.yaml``), sorted."""
    return sorted(p.stem for p in _DIR.glob("*.yaml"))


def load_comparison_data(name: str) -> dict[str, Any]:
    """A comparison preset's raw data (a fresh copy), its ``name`` defaulting to the file's."""
    if name not in list_comparison_presets():
        raise ComparisonPresetNotFoundError(
            f"Unknown comparison preset: {name!r} (choose from {', '.join(list_comparison_presets())})"
        )
    data = yaml.safe_load((_DIR / f"{name}.yaml").read_text())
    if not isinstance(data, dict):
        raise ValueError(f"comparison preset {name}: expected a mapping at the top level")
    data.setdefault("name", name)
    return data


def load_comparison_preset(name: str, overrides: dict[str, Any] | None = None) -> ComparisonSpec:
    """A comparison preset as a validated :class:`ComparisonSpec`, with optional overrides (merged key by key)."""
    return ComparisonSpec.model_validate(merge(load_comparison_data(name), overrides or {}))
