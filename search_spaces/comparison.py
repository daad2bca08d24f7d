"""The comparison spec: optimizers × batch sizes on one workload, one budget for every arm, and its expansion.

A comparison asks one question: *on this workload and batch size, is the first arm (the optimizer under test,
TVLARS in the presets) better than each of the others once every arm has been tuned on the same budget?*
:class:`ComparisonSpec` states it; :func:`expand` turns it into one study spec per tuning repeat × arm × batch size,
each of which :class:`search_spaces.spec.StudySpec` validates. These rules, each the same for every arm, make the
studies comparable:

**The rules** (R1–R11). What a comparison promises, each rule the same for every arm; the sections below say how
the studies are built. R2–R6 are computed by :mod:`service.comparisons.stats` (``simulate`` checks them), R4's
rounds run in :mod:`service.comparisons.machine`, R11 is :func:`service.comparisons.report.reading`.

- **R1 Unit.** The unit of replication is the tuning repeat ``r``. Re-run seeds are nested in the repeat and shared
  by every arm (``RERUN_SEED_BASE + r·S + j``, ``S`` = ``rerun.seeds``); the repeat's score difference ``d_r`` is the
  mean over its re-run seeds of (arm A − arm B), test accuracy at best validation of each arm's repeat-``r`` winner.
  Every trial stores the seed it trained with (a trial attribute), so all of this can be checked from storage alone.
- **R2 Test.** A verdict is a paired t over repeats (``n − 1`` df) on ``d_r``. The two-level bootstrap (repeats and
  seeds) stays as a descriptive interval in the report only.
- **R3 Multiplicity.** Each of the ``m`` primary verdicts of a comparison (``primary`` arms × batch sizes; every arm
  after the first unless ``primary`` names some) is tested at ``α/m`` (Bonferroni: simple, and valid with R4); the
  others are secondary, tested at ``α`` uncorrected, and say so.
- **R4 Looks.** ``tuning_repeats: {min, max}`` (an integer means min = max): tuning repeats run in rounds, every arm
  of a batch size together; after each complete round the batch size's verdicts are recomputed. 10 % of a verdict's
  α is spent evenly over the interim looks ``min … max − 1`` and 90 % at ``max`` (a union bound: valid with t, no
  boundary integration). A batch size stops when no verdict is undecided; at ``max`` what is left is ``undecided``.
  Spending stays equal across arms at every stop; the result records each look.
- **R5 Verdict.** With ``CI_k = d̄ ± t(1 − α_k/2, n − 1)·s/√n`` and the spec's ``margin`` δ (pp, default 1.0):
  ``better`` if L > 0, ``worse`` if U < 0, ``equivalent`` if −δ < L and U < δ (two one-sided tests), else
  ``undecided``. Better or worse wins a tie and is reported "within the margin" when ``|d̄| < δ``. A decision is
  frozen at the look that made it. ``worse`` against an arm whose space the first arm contains is
  ``inconclusive: search failure``; ``inconclusive`` (with the reason) where a rule could not be checked.
  ``undecided`` never reads as "no difference".
- **R6 Power.** Every verdict carries its MDD = ``(t(1 − α_K/2, ν) + t(0.8, ν))·s/√n_max``, with ``s`` pooled over
  the batch size's verdicts (``ν`` its df) and ``α_K`` the last look's α. (With t quantiles this normal-theory
  formula slightly overstates power at very few repeats: 0.78 at 8 repeats and α = 0.015, 0.72 at 3.)
- **R7 Plan, never training.** ``POST /v1/comparisons`` with ``"dry_run": true`` (CLI ``compare … --plan``, client
  ``comparisons.plan(...)``) answers 200 with the plan and stores nothing: per arm × batch size the studies,
  trials, epochs and optimizer steps as [min, max], an estimated wall time from stored epoch times of the same
  workload (else ``assumed_epoch_s``), and each verdict's expected MDD from stored spreads (else ``assumed_sd_pp``).
- **R8 Tuning you can describe.** The default sampler is quasi-random (scrambled Sobol, one scramble per repeat) such
  that every arm draws the same quantiles for the dimensions arms share (``lr`` first); enqueued points do not
  consume Sobol indices; TPE stays a choice. Expected best-of-n is descriptive, from drawn trials only.
- **R9 Range check that can fail.** Position is measured in the range where the winner was found; an extension gets
  as many trials as a tuning study, over the old range widened one decade that way (log) or to the hard bound
  (linear), up to ``range_check.max_extensions``; then the verdict says "optimum at the edge of the searched range".
  Extension seeds and study names never collide with other repeats'.
- **R10 Budgets in steps too.** Results and report give optimizer steps per trial, examples and wall seconds beside
  epochs; comparisons default ``drop_last: true``; time-to-target counts "never reached" as ∞.
- **R11 Words only from numbers.** The report's reading is generated from the verdicts; no sentence of direction or
  cause without a decided verdict or a number beside it.

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
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tvlars.optim import LOW, LR_SCALINGS, OptimizerSpec, get_optimizer, interpolate, round_sig
from tvlars.train.metrics import Metric

from . import merge
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
    registered_optimizer,
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
    "TuningRepeats",
    "default_lr_center",
    "expand",
    "list_comparison_presets",
    "load_comparison_preset",
    "lr_range",
    "extension_spec",
    "widened",
    "range_check",
    "reference_points",
    "rerun_seed_base",
    "rerun_seeds",
]

_DIR = Path(__file__).resolve().parent / "comparisons"

#: Comparisons select on validation: the trainer's held-out split reports ``val_acc``.
DEFAULT_METRIC = Metric.VAL_ACC.value
#: Re-run seeds start here: tuning trials use ``seed + trial number``, far below it.
RERUN_SEED_BASE = 1_000_000
MAX_ARMS = 8
MAX_BATCH_SIZES = 16
MAX_RERUN_SEEDS = 32
MAX_TUNING_REPEATS = 10
#: A look needs 2 repeats (a paired t over repeats has n − 1 degrees of freedom).
MIN_LOOK_REPEATS = 2
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

    optimizer: str = Field(description="A registered optimizer, built in or an installed plugin (GET /v1/workloads)")
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

    @field_validator("optimizer")
    @classmethod
    def _registered(cls, v: str) -> str:
        return registered_optimizer(v)

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
        return self.lr_scaling or self.spec.lr_scaling

    @property
    def spec(self) -> OptimizerSpec:
        """The arm's optimizer's declaration."""
        return get_optimizer(self.optimizer)


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
        le=100_000_000,
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


class TuningRepeats(_Strict):
    """``tuning_repeats: {min, max}``: looks after every round from ``min`` to ``max`` repeats (R4)."""

    min: int = Field(ge=MIN_LOOK_REPEATS, le=MAX_TUNING_REPEATS, description="Repeats at the first look (>= 2)")
    max: int = Field(ge=MIN_LOOK_REPEATS, le=MAX_TUNING_REPEATS, description="Repeats at the last look")

    @model_validator(mode="after")
    def _ordered(self) -> TuningRepeats:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) exceeds max ({self.max})")
        return self


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
    tuning_repeats: Annotated[int, Field(ge=1, le=MAX_TUNING_REPEATS)] | TuningRepeats = Field(
        default=3,
        description="Independent tunings of every arm × batch size (other sampler and trial seeds), run in rounds; "
        "each one's winner is re-run on its own fresh seeds. An integer n: one look at n repeats; {min, max}: a look "
        "after every round from min to max, a batch size stopping once all its verdicts are decided (R4)",
    )
    margin: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="δ in percentage points: 'equivalent' means the verdict's interval lies inside (−δ, δ) (R5)",
    )
    primary: list[str] | None = Field(
        default=None,
        description="Labels of the arms whose verdicts against the first arm share the family's α (Bonferroni over "
        "them × batch sizes); the others are secondary, tested uncorrected at α and reported so. None: every arm",
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
        if self.primary is not None:
            labels = [a.name for a in self.arms]
            unknown = [x for x in self.primary if x not in labels[1:]]
            if unknown:
                raise ValueError(
                    f"primary: {', '.join(map(repr, unknown))} is not an arm compared with the first "
                    f"(choose from {', '.join(labels[1:])})"
                )
            if not self.primary or len(set(self.primary)) != len(self.primary):
                raise ValueError("primary: name each arm once, at least one")
        if self.rerun.top_k > self.n_trials:
            raise ValueError(f"rerun.top_k ({self.rerun.top_k}) exceeds the trials a study runs ({self.n_trials})")
        for i, arm in enumerate(self.arms):
            if arm.lr_center is None and arm.scaling != arm.spec.lr_scaling:
                raise ValueError(f"arms[{i}] ({arm.name}): lr_scaling {arm.scaling!r} needs an lr_center")
            if arm.lr_center is None and "lr" not in arm.spec.reference(self.batch_sizes[0]):
                raise ValueError(f"arms[{i}] ({arm.name}): no reference LR for {arm.optimizer!r}; give lr_center")
            for i_bs, bs in enumerate(self.batch_sizes):
                tuned = _study_spec(self, arm, i_bs, self.repeats_max - 1)  # the last repeat: its seeds are largest
                try:
                    StudySpec.model_validate(tuned)
                except ValidationError as e:
                    raise ValueError(f"arms[{i}] ({arm.name}) at batch size {bs}: {_errors(e)}") from None
                if self.range_check.mode == "extend":
                    self._check_extensions(i, arm, bs, tuned)
        return self

    def _check_extensions(self, i: int, arm: Arm, bs: int, tuned: dict[str, Any]) -> None:
        """The range-check extension studies this tuning study may need, validated now: a comparison whose later
        study would be refused is refused at submit (every range widened at its high end, and every one at its low
        end, as many times as ``range_check.max_extensions`` allows)."""
        for edge in ("high", "low"):
            searched = None
            for index in range(1, self.range_check.max_extensions + 1):
                extension = extension_spec(tuned, dict.fromkeys(tuned["search_space"], edge), index, searched)
                try:
                    StudySpec.model_validate(extension)
                except ValidationError as e:
                    raise ValueError(
                        f"arms[{i}] ({arm.name}) at batch size {bs}: its range-check extension {index} (ranges "
                        f"widened at their {edge} end) would be invalid: {_errors(e)}"
                    ) from None
                searched = extension["search_space"]

    @property
    def repeats_min(self) -> int:
        """Tuning repeats at the first look (R4): ``tuning_repeats`` or its ``min``."""
        return self.tuning_repeats if isinstance(self.tuning_repeats, int) else self.tuning_repeats.min

    @property
    def repeats_max(self) -> int:
        """Tuning repeats at the last look (R4): ``tuning_repeats`` or its ``max``."""
        return self.tuning_repeats if isinstance(self.tuning_repeats, int) else self.tuning_repeats.max

    @property
    def primary_labels(self) -> list[str]:
        """The arms whose verdicts are primary (R3): ``primary``, else every arm after the first."""
        return list(self.primary) if self.primary is not None else [a.name for a in self.arms[1:]]

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

    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON data: what is stored and compared to detect a changed spec."""
        return self.model_dump(mode="json")


_DEFAULT_TRIALS = 8


def _errors(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'spec'}: {x['msg']}" for x in e.errors())


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


def expand(spec: ComparisonSpec, repeats: range | None = None, batch_sizes: list[int] | None = None) -> list[ArmStudy]:
    """One study spec per tuning repeat × arm × batch size (in that order): same seed stream and LR widths matched
    (module docstring). ``repeats`` (default: the first round, ``0 … repeats_min − 1``) and ``batch_sizes`` (default
    all) pick a round's studies (R4)."""
    return [
        ArmStudy(arm, bs, i, _study_spec(spec, arm, i, r), spec.epoch_budget, r)
        for r in (range(spec.repeats_min) if repeats is None else repeats)
        for arm in spec.arms
        for i, bs in enumerate(spec.batch_sizes)
        if batch_sizes is None or bs in batch_sizes
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
    """The optimizer's reference LR at ``batch_size``: its declared grids' geometric mean, interpolated log–log and
    constant beyond the ends (:meth:`tvlars.optim.OptimizerSpec.reference`).

    Under the declaration's own ``linear_256`` rule (LARS + warm-up) it is a base LR per 256 examples (the trainer
    scales it); otherwise an absolute LR.
    """
    lr = get_optimizer(optimizer).reference(batch_size).get("lr")
    if lr is None:
        raise ValueError(f"no reference LR for optimizer {optimizer!r}: give the arm an lr_center")
    return lr


def _study_spec(spec: ComparisonSpec, arm: Arm, i_bs: int, repeat: int = 0) -> dict[str, Any]:
    bs = spec.batch_sizes[i_bs]
    center = _arm_center(arm, bs)
    if arm.scaling == "linear_256" and arm.spec.lr_scaling != "linear_256":
        center *= bs / 256  # an optimizer declared linear_256 gets bs/256 in the trainer; the others take it as written
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
    ``batch_size`` and the points where its space contains another optimizer's.

    Official: ``lr`` at the range's centre (the reference grid's geometric mean, or the arm's ``lr_center``), the
    other keys at the declaration's reference (:meth:`tvlars.optim.OptimizerSpec.reference`; TVLARS: the paper
    grid's λ, in units of training as ``lam_steps``, and no delay). Contained optimizers
    (:attr:`~tvlars.optim.OptimizerSpec.contains`): the official point with the named keys at the bottom of their
    range (TVLARS's λ → 0, where φ stays at 1/(α + 1) and TVLARS trains as LARS at ``lr`` / (α + 1)). Values are
    clipped into the space; keys the space lacks are left out.
    """
    spec = arm.spec
    official: dict[str, Any] = {**spec.reference(batch_size), "lr": lr_center}
    special = []
    for at in spec.contains.values():
        point = dict(official)
        for key, value in at.items():
            low = space[key].get("low") if isinstance(space.get(key), dict) else None
            if value != LOW:
                point[key] = value
            elif low is not None:
                point[key] = low
        special.append(point)
    points = []
    for point in (official, *special):
        clipped = {k: _clip(space[k], v) for k, v in point.items() if k in space}
        if point and clipped and clipped not in points:
            points.append(clipped)
    return points


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
        return interpolate(dict(arm.lr_center), bs)
    return float(arm.lr_center)


def _param_data(p: FloatParam | IntParam | CategoricalParam) -> dict[str, Any]:
    return p.model_dump(exclude_none=True)


_round = round_sig


def _default_space(optimizer: str) -> dict[str, Any]:
    """The declaration's default comparison ranges of the keys it searches besides ``lr``."""
    return {
        key: FloatParam(type="float", low=r.low, high=r.high, log=r.log)
        for key, r in get_optimizer(optimizer).search_space().items()
    }


def _default_fixed(optimizer: str, epochs: int) -> dict[str, Any]:
    """The declaration's official fixed values; a recipe that warms up fixes its share of ``epochs`` as warm-up."""
    spec = get_optimizer(optimizer)
    fixed = copy.deepcopy(dict(spec.official))
    if spec.warmup_fraction:
        fixed["warmup_epochs"] = _round(spec.warmup_fraction * epochs)
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
