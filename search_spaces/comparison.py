"""The comparison spec: optimizers × batch sizes on one workload, one budget for every arm, and its expansion.

A comparison asks one question: *on this workload and batch size, is the first arm (the optimizer under test,
TVLARS in the presets) better than each of the others once every arm has been tuned on the same budget?*
:class:`ComparisonSpec` states it; :func:`expand` turns it into one study spec per arm × batch size, each of which
:class:`search_spaces.spec.StudySpec` validates. Three rules make the studies comparable:

**Same budget.** Every arm × batch size gets the same ``budget.n_trials`` and the same ``budget.epochs``: the
epochs every trial of the study may spend in total, pruned and failed trials included (the worker stops starting
trials once the study has spent it). ``budget.epochs`` defaults to ``n_trials × workload.epochs``.

**Same random stream.** The study at batch-size index ``i`` (position in ``batch_sizes``) gets sampler seed
``sampler.seed + i`` in every arm, and every study trains trial ``n`` with seed ``seed + n`` (``vary_seed``): trial
``n`` of each arm starts from the same initial weights and sees the same data order. Where two arms' spaces have the
same shape (``lr`` alone) a random or QMC sampler proposes them the same quantiles, so differences between arms come
from the optimizers rather than from the draw. The re-runs use seeds ``RERUN_SEED_BASE + j`` (:func:`rerun_seeds`),
never used while tuning, identical across arms, so arms can be compared seed by seed (paired differences).

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

An arm's ``lr_center`` overrides the centre: one number for every batch size, or a ``{batch_size: lr}`` mapping
interpolated as above. ``lr`` itself is never given in an arm's ``search_space`` or ``fixed``: its range is what this
module matches. An arm's other searched parameters default to the paper grid's range (TVLARS: ``lam`` log-uniform
over the grids' 1e-6 … 5e-2); its fixed values default to the paper presets' (the official code's settings), with
LARS's warm-up the paper's 20 % of ``workload.epochs``. Arms may search more knobs than others: that costs them
budget, which is the point of an equal budget.

>>> spec = load_comparison_preset("compare-mnist1d-cpu")
>>> [(s.arm.name, s.batch_size) for s in expand(spec)][:2]
[('tvlars', 32), ('tvlars', 256)]
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    "Rerun",
    "default_lr_center",
    "expand",
    "list_comparison_presets",
    "load_comparison_preset",
    "lr_range",
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
#: What the range check does with an optimum in the outer 10 % of its log range.
RANGE_CHECKS = ("extend", "flag")
#: Comparison names leave room for "-<arm>-bs<batch size>-t<repeat>-x-r<rank>" within a study name's 128 characters.
COMPARISON_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,71}$"
ARM_LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"

#: The optimizer whose paper preset grid gives an arm's default LR centre and fixed values.
_PRESET_OF = {"tvlars": "tvlars", "lars": "tvlars", "lars_warmup": "lars-warmup", "lamb": "lamb"}
_PAPER_PRESET = "paper-cifar10-resnet18-bs{bs}-{optimizer}"
_DEFAULT_SCALING = {"lars_warmup": "linear_256"}
#: The paper warms LARS up for 20 of its 100 epochs.
_PAPER_WARMUP_FRACTION = 0.2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComparisonWorkload(Workload):
    """The workload every study trains; its batch size comes from the comparison's ``batch_sizes``."""

    batch_size: int | None = Field(default=None, exclude=True)  # type: ignore[assignment]

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
    """One budget for every arm × batch size: trials, total epochs (pruned and failed count), concurrency."""

    n_trials: int = Field(default=8, ge=1, le=1_000)
    epochs: int | None = Field(
        default=None, ge=1, description="Epochs a study may spend over all its trials; None: n_trials × epochs"
    )
    max_concurrent: int = Field(default=1, ge=1, le=1024)
    max_failed: int = Field(default=3, ge=0, le=1_000)


class ComparisonSampler(_Strict):
    """The Optuna sampler of every study; batch-size index ``i`` samples with ``seed + i`` in every arm."""

    name: Literal["tpe", "random", "cmaes", "gp", "qmc"] = "tpe"
    seed: int = Field(default=0, ge=0, le=2**31 - 1 - MAX_BATCH_SIZES * MAX_TUNING_REPEATS)
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
        default=1,
        ge=1,
        le=MAX_TUNING_REPEATS,
        description="Independent tunings of every arm × batch size (other sampler and trial seeds); each one's "
        "winner is re-run on the shared fresh seeds",
    )
    range_check: Literal[RANGE_CHECKS] = Field(  # type: ignore[valid-type]
        default="extend",
        description="An optimum in the outer 10 % of a log range: extend (one decade that way, the same extra "
        "budget for every arm at that batch size) or flag (mark it only)",
    )

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
        if self.rerun.top_k > self.budget.n_trials:
            raise ValueError(f"rerun.top_k ({self.rerun.top_k}) exceeds budget.n_trials ({self.budget.n_trials})")
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
        """The epochs each arm × batch size may spend in total."""
        return self.budget.epochs or self.budget.n_trials * self.workload.epochs

    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON data: what is stored and compared to detect a changed spec."""
        return self.model_dump(mode="json")


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


def rerun_seeds(spec: ComparisonSpec) -> list[int]:
    """The fresh seeds every arm's top configs are re-trained on: the same for every arm, none used in tuning."""
    return [RERUN_SEED_BASE + j for j in range(spec.rerun.seeds)]


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
            "n_trials": spec.budget.n_trials,
            "epochs": spec.epoch_budget,
            "max_concurrent": spec.budget.max_concurrent,
            "max_failed": spec.budget.max_failed,
        },
        "resources": spec.resources.model_dump(),
        "seed": spec.seed + repeat * REPEAT_SEED_STRIDE,
        "vary_seed": True,
    }


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
