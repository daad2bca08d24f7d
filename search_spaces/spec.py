"""The study spec: one pydantic model that every entry point (REST, CLI, presets, engine) validates with.

A spec names the workload (a ``tvlars.train`` trial config), the optimizer, the search space, the objective, the
Optuna sampler, the Ray Tune scheduler, the budget and per-trial resources. Validation checks each field on its own
and the whole together: every key is a trial config key, no key is both fixed and searched, and the trial config
built from the space's lower corner passes the trainer's own checks.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tvlars.data import DATASETS
from tvlars.models import MODELS
from tvlars.optim import OPTIMIZERS
from tvlars.registry import Registry, WorkloadNotInstalledError
from tvlars.train import TASKS, TrialConfig, dead_keys
from tvlars.train.config import trial_keys
from tvlars.train.metrics import DIRECTIONS, VALIDATION, Metric

from .algorithms import MULTI_OBJECTIVE_SAMPLERS, SAMPLERS, SCHEDULERS, check_options

__all__ = [
    "INT_BOUND",
    "MAX_N_TRIALS",
    "MAX_PARAMS",
    "METRICS",
    "RESUMABLE_FIELDS",
    "SEED_MAX",
    "Budget",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Objective",
    "Resources",
    "Sampler",
    "Scheduler",
    "StudySpec",
    "Workload",
    "non_finite_path",
    "spec_changes",
]

#: Limits that keep one request from asking for an unbounded amount of work or storage.
MAX_N_TRIALS = 10_000
MAX_PARAMS = 32
MAX_CHOICES = 1_000
MAX_ENQUEUED = 1_000
#: The largest seed anything derived from a spec may train or sample with (torch and numpy take 32-bit seeds; Optuna
#: and Ray hash larger ones in ways that overflow): a spec's seeds, and every seed derived from them, stay in
#: [0, SEED_MAX].
SEED_MAX = 2**31 - 1
#: Bounds on an int range: a trial config integer is a count or a size (Optuna stores it as a float, exact to 2⁵³).
INT_BOUND = 2**31 - 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

#: Trial results a study can optimise (by name), and which way each is better by default
#: (:data:`tvlars.train.metrics.DIRECTIONS`).
METRICS: dict[str, str] = {m.value: direction for m, direction in DIRECTIONS.items()}
#: The only top-level fields a resume may change: a study can be given more trials; anything else is another study.
RESUMABLE_FIELDS = frozenset({"budget"})

#: Keys set by the spec's own fields, never inside workload/fixed/search_space.
_RESERVED = {"optimizer", "seed", "device", "num_threads", "data_dir"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatParam(_Strict):
    """A float in [low, high]; ``log`` samples on a log scale; ``step`` makes it discrete."""

    type: Literal["float"]
    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = False
    step: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be used together")
        return self


class IntParam(_Strict):
    """An integer in [low, high] with ``step`` (default 1); ``log`` samples on a log scale."""

    type: Literal["int"]
    low: int = Field(ge=-INT_BOUND, le=INT_BOUND)
    high: int = Field(ge=-INT_BOUND, le=INT_BOUND)
    log: bool = False
    step: int = Field(default=1, ge=1, le=INT_BOUND)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError(f"a log-scale range needs low >= 1, got {self.low}")
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be used together")
        return self


class CategoricalParam(_Strict):
    """One of ``choices`` (numbers, strings or booleans)."""

    type: Literal["categorical"]
    choices: list[bool | int | float | str] = Field(min_length=1, max_length=MAX_CHOICES)

    @field_validator("choices")
    @classmethod
    def _unique(cls, choices: list) -> list:
        if len({(type(c), c) for c in choices}) != len(choices):
            raise ValueError("choices must be unique")
        if any(isinstance(c, float) and not math.isfinite(c) for c in choices):
            raise ValueError("choices must be finite")
        return choices


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Workload(BaseModel):
    """What one trial trains: any ``tvlars.train`` trial config keys; these five are the usual ones.

    ``task``, ``dataset`` and ``model`` name workloads registered where the API runs (built-in or an installed
    plugin: ``GET /v1/workloads``); nothing in a spec is imported or evaluated, so ``module:attr`` is refused.
    """

    model_config = ConfigDict(extra="allow")

    task: str = "classification"
    dataset: str
    model: str
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(ge=1, le=1_048_576)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        return _registered(TASKS, v)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return _registered(DATASETS, v)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _registered(MODELS, v)


def registered_optimizer(name: str) -> str:
    """``name`` if it is a usable registered optimizer (built-in or installed plugin), else a clear error."""
    return _registered(OPTIMIZERS, name)


def _registered(registry: Registry, name: str) -> str:
    """``name`` if it is a usable registered workload, else a clear error (unknown, code reference, broken plugin)."""
    kind, names = registry.kind, ", ".join(registry.names())
    if ":" in name:
        raise ValueError(
            f"{kind} {name!r} looks like a code reference: a spec only names an installed {kind} ({names}); "
            "nothing in a request is imported or evaluated (install a plugin package instead: docs/workloads.md)"
        )
    try:
        registry.get(name)  # a plugin that fails to import or clashes: its error
    except WorkloadNotInstalledError as e:  # here: the API, or a worker re-validating at claim (the host is named)
        raise ValueError(f"unknown {e}") from None
    return name


class Objective(_Strict):
    """A trial result to optimise. ``direction`` defaults to the metric's natural one."""

    metric: Literal[tuple(METRICS)] = Metric.VAL_ACC.value  # type: ignore[valid-type]  # select on validation
    direction: Literal["maximize", "minimize"] | None = None

    @model_validator(mode="after")
    def _default_direction(self) -> Objective:
        if self.direction is None:
            self.direction = METRICS[self.metric]
        return self


class Sampler(_Strict):
    """An Optuna sampler by name; ``options`` go to its constructor (e.g. ``n_startup_trials`` for TPE)."""

    name: Literal[tuple(SAMPLERS)] = "tpe"  # type: ignore[valid-type]
    seed: int | None = Field(default=0, ge=0, le=SEED_MAX)
    options: dict[str, Any] = Field(default_factory=dict, description="see search_spaces.algorithms.SAMPLERS")

    @model_validator(mode="after")
    def _options(self) -> Sampler:
        self.options = check_options("sampler", self.name, self.options)
        return self


class Scheduler(_Strict):
    """A Ray Tune trial scheduler. ``grace_period`` and ``max_t`` are in epochs (``max_t`` defaults to epochs)."""

    name: Literal[tuple(SCHEDULERS)] = "none"  # type: ignore[valid-type]
    grace_period: int = Field(default=1, ge=1, le=10_000)
    reduction_factor: float = Field(default=3.0, gt=1.0, le=100.0, allow_inf_nan=False)
    max_t: int | None = Field(default=None, ge=1, le=10_000)
    options: dict[str, Any] = Field(default_factory=dict, description="see search_spaces.algorithms.SCHEDULERS")

    @model_validator(mode="after")
    def _options(self) -> Scheduler:
        self.options = check_options("scheduler", self.name, self.options)
        return self


class Budget(_Strict):
    """How many trials to finish (COMPLETE or PRUNED), how many at once, how many errors to tolerate, and epochs.

    ``n_trials`` may be left out for a grid study: it is then the grid's size. ``epochs`` caps the epochs the
    study spends over all its trials, pruned and failed included: a new trial starts only if the epochs the
    finished trials ran (as stored) plus every running trial's full epochs plus its own full epochs fit in it,
    so the study never spends more; it ends SUCCEEDED once no further trial fits. Comparisons give every arm the
    same ``epochs``, which is what makes their budgets equal.
    """

    n_trials: int | None = Field(default=None, ge=1, le=MAX_N_TRIALS)
    epochs: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Epochs all trials may spend together (None: no cap)"
    )
    max_concurrent: int = Field(default=1, ge=1, le=1024)
    max_failed: int = Field(default=3, ge=0, le=MAX_N_TRIALS)


class Resources(_Strict):
    """What each trial reserves from Ray; a fractional ``gpu`` packs several trials on one GPU."""

    cpu: float = Field(default=1.0, gt=0, le=1024)
    gpu: float = Field(default=0.0, ge=0, le=64)


class StudySpec(_Strict):
    """A tuning study: what to train and search, how to sample and prune, the budget (README, "A study spec")."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique study name: letters, digits, '.', '_', '-'")
    description: str = Field(default="", max_length=2_000)
    workload: Workload
    optimizer: str = Field(
        default="tvlars", description="A registered optimizer, built in or an installed plugin (GET /v1/workloads)"
    )
    search_space: dict[str, Param] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)
    objective: Objective | list[Objective] = Field(default_factory=Objective)
    sampler: Sampler = Field(default_factory=Sampler)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    budget: Budget = Field(default_factory=Budget)
    resources: Resources = Field(default_factory=Resources)
    enqueue: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ENQUEUED)
    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="Trial seeds are seed + trial number (see vary_seed)")
    vary_seed: bool = Field(
        default=True,
        description="True: trial n trains with seed + n. False: every trial uses seed (common random numbers: "
        "differences between trials come from their hyperparameters alone)",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "tvlars-mnist1d-bs2000",
                    "workload": {
                        "task": "classification",
                        "dataset": "mnist1d",
                        "model": "mlp",
                        "epochs": 20,
                        "batch_size": 2000,
                    },
                    "optimizer": "tvlars",
                    "search_space": {
                        "lr": {"type": "float", "low": 0.5, "high": 20, "log": True},
                        "lam": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
                        "delay_epochs": {"type": "int", "low": 0, "high": 10},
                    },
                    "fixed": {"weight_decay": 5e-4, "momentum": 0.9},
                    "objective": {"metric": Metric.VAL_ACC.value, "direction": "maximize"},
                    "sampler": {"name": "tpe", "seed": 0},
                    "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 3},
                    "budget": {"n_trials": 24, "max_concurrent": 4, "max_failed": 5},
                    "resources": {"cpu": 1, "gpu": 0},
                }
            ]
        },
    )

    # -- whole-spec checks ----------------------------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        where = non_finite_path(data)
        if where is not None:
            raise ValueError(
                f"{'.'.join(map(str, where)) or 'spec'}: NaN and ±Infinity are not numbers a spec may hold"
            )
        return data

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        return registered_optimizer(v)

    @field_validator("search_space")
    @classmethod
    def _space_keys(cls, space: dict[str, Any]) -> dict[str, Any]:
        if len(space) > MAX_PARAMS:
            raise ValueError(f"at most {MAX_PARAMS} parameters, got {len(space)}")
        for key in space:
            _check_trial_key(key, "search_space")
        return space

    @field_validator("fixed")
    @classmethod
    def _fixed_keys(cls, fixed: dict[str, Any]) -> dict[str, Any]:
        for key in fixed:
            _check_trial_key(key, "fixed")
        return fixed

    @model_validator(mode="after")
    def _check_whole(self) -> StudySpec:
        workload_keys = set(self.workload.model_dump()) - {"task", "dataset", "model", "epochs", "batch_size"}
        for key in workload_keys:
            _check_trial_key(key, "workload")
        for where, keys in (("fixed", set(self.fixed)), ("workload", set(self.workload.model_dump()))):
            both = sorted(keys & set(self.search_space))
            if both:
                raise ValueError(f"{', '.join(both)} both searched and set in {where}: keep one")
        overlap = sorted(set(self.fixed) & set(self.workload.model_dump()))
        if overlap:
            raise ValueError(f"{', '.join(overlap)} set in both workload and fixed: keep one")
        objectives = self.objectives
        if len({o.metric for o in objectives}) != len(objectives):
            raise ValueError("objective metrics must be distinct")
        if len(objectives) > 1:
            if self.scheduler.name != "none":
                raise ValueError("a multi-objective study cannot prune: use scheduler 'none'")
            if self.sampler.name not in MULTI_OBJECTIVE_SAMPLERS:
                raise ValueError(f"sampler {self.sampler.name!r} is single-objective; use nsga2, tpe, gp or random")
        if self.sampler.name == "grid":
            size = self.grid_size()
            if size > MAX_N_TRIALS:
                raise ValueError(f"the grid has {size} points: at most {MAX_N_TRIALS} (one trial per point)")
            if self.budget.n_trials is None:
                self.budget.n_trials = size
            elif self.budget.n_trials > size:
                raise ValueError(f"budget.n_trials ({self.budget.n_trials}) exceeds the grid's {size} points")
        elif self.budget.n_trials is None:
            self.budget.n_trials = 20
        if self.vary_seed:
            # trial numbers: every finished trial, every failed one the budget tolerates (+1), every running one
            last = self.seed + self.budget.n_trials + self.budget.max_failed + self.budget.max_concurrent
            if last > SEED_MAX:
                raise ValueError(
                    f"seed ({self.seed}) + trial number would reach {last}, past {SEED_MAX}: use a seed <= "
                    f"{SEED_MAX - (last - self.seed)} (or vary_seed: false)"
                )
        if self.budget.epochs is not None and self.budget.epochs < self.workload.epochs:
            epochs = self.workload.epochs
            raise ValueError(f"budget.epochs ({self.budget.epochs}) cannot pay for one full trial ({epochs} epochs)")
        if self.scheduler.max_t is not None and self.scheduler.max_t > self.workload.epochs:
            raise ValueError(f"scheduler.max_t ({self.scheduler.max_t}) exceeds workload.epochs")
        if self.scheduler.name != "none" and self.scheduler.grace_period > self.workload.epochs:
            raise ValueError(f"scheduler.grace_period ({self.scheduler.grace_period}) exceeds workload.epochs")
        for i, params in enumerate(self.enqueue):
            self._check_enqueued(i, params)
        # a key nothing in this trial reads (lam for lars, probe_lr for classification) is a dead dimension
        corner_config = self.trial_config(self.lower_corner())
        for key, why in dead_keys(corner_config).items():
            where = "search_space" if key in self.search_space else "fixed" if key in self.fixed else "workload"
            raise ValueError(f"{where}.{key} would be ignored: {why}")
        # the trainer's own checks, on the space's lower corner and (every bound by value) its upper corner
        try:
            corner = TrialConfig.from_dict(corner_config)
        except (ValueError, TypeError) as e:
            raise ValueError(f"the trial config this spec builds is invalid: {e}") from None
        try:
            TrialConfig.from_dict(self.trial_config(self.upper_corner()))
        except (ValueError, TypeError) as e:
            raise ValueError(f"the trial config at the top of the search space is invalid: {e}") from None
        if self.scheduler.name in ("hyperband", "pbt") and (
            corner.checkpoint_every != 1 or "checkpoint_every" in self.search_space
        ):
            raise ValueError(
                f"scheduler {self.scheduler.name!r} pauses and resumes trials from checkpoints: "
                f"checkpoint_every must be 1 (got {corner.checkpoint_every})"
            )
        on_val = [o.metric for o in objectives if o.metric in VALIDATION]
        if on_val and corner.val_fraction == 0 and "val_fraction" not in self.search_space:
            raise ValueError(f"objective {on_val[0]!r} needs a validation split: val_fraction is 0")
        return self

    def _check_enqueued(self, i: int, params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - set(self.search_space))
        if unknown:
            raise ValueError(f"enqueue[{i}]: {', '.join(unknown)} not in the search space")
        for key, value in params.items():
            p = self.search_space[key]
            if isinstance(p, CategoricalParam):
                ok = value in p.choices
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and p.low <= value <= p.high
            if not ok:
                raise ValueError(f"enqueue[{i}]: {key}={value!r} is outside the search space")

    # -- derived views ----------------------------------------------------------------------------------------------

    @property
    def objectives(self) -> list[Objective]:
        return self.objective if isinstance(self.objective, list) else [self.objective]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]  # type: ignore[misc]

    def grid(self) -> dict[str, list[Any]]:
        """Each parameter's grid values: categorical choices, or the points of a stepped range.

        ValueError if the grid has more than :data:`MAX_N_TRIALS` points (counted before anything is built)."""
        size = self.grid_size()
        if size > MAX_N_TRIALS:
            raise ValueError(f"the grid has {size} points: at most {MAX_N_TRIALS} (one trial per point)")
        grid = {}
        for key, p in self.search_space.items():
            if isinstance(p, CategoricalParam):
                grid[key] = list(p.choices)
            elif isinstance(p, IntParam):
                grid[key] = list(range(p.low, p.high + 1, p.step))
            else:
                grid[key] = [p.low + i * p.step for i in range(_grid_points(key, p))]  # type: ignore[operator]
        return grid

    def grid_size(self) -> int:
        """The number of grid points, counted arithmetically (nothing is built; a huge grid is just a big int)."""
        return math.prod(_grid_points(key, p) for key, p in self.search_space.items())

    def lower_corner(self) -> dict[str, Any]:
        return {k: (p.choices[0] if isinstance(p, CategoricalParam) else p.low) for k, p in self.search_space.items()}

    def upper_corner(self) -> dict[str, Any]:
        return {k: (p.choices[-1] if isinstance(p, CategoricalParam) else p.high) for k, p in self.search_space.items()}

    def trial_config(self, params: dict[str, Any], trial_seed: int | None = None) -> dict[str, Any]:
        """The ``tvlars.train`` config of one trial with the given searched values."""
        config = {k: v for k, v in self.workload.model_dump().items()}
        config.update(copy.deepcopy(self.fixed))
        config.update(params)
        config["optimizer"] = self.optimizer
        config["seed"] = self.seed if trial_seed is None else trial_seed
        return config

    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON data: what is stored with the study and compared to detect a changed spec."""
        return self.model_dump(mode="json")

    def resumed(self, *, n_trials: int) -> StudySpec:
        """This spec with a larger budget: the one change a resume makes (see :data:`RESUMABLE_FIELDS`)."""
        if n_trials < self.budget.n_trials:  # type: ignore[operator]
            raise ValueError(f"n_trials can only grow (the study has n_trials={self.budget.n_trials})")
        data = self.canonical()
        data["budget"]["n_trials"] = n_trials
        return StudySpec.model_validate(data)


def _grid_points(key: str, p: FloatParam | IntParam | CategoricalParam) -> int:
    """How many grid points one parameter has: its choices, or the steps of a stepped range (arithmetic only)."""
    if isinstance(p, CategoricalParam):
        return len(p.choices)
    if isinstance(p, IntParam) and not p.log:
        return (p.high - p.low) // p.step + 1
    if isinstance(p, FloatParam) and p.step is not None:
        n = (p.high - p.low) / p.step + 1e-9
        if not math.isfinite(n) or n >= MAX_N_TRIALS:
            return MAX_N_TRIALS + 1  # a count past the cap is refused as such; its exact size does not matter
        return int(math.floor(n)) + 1
    raise ValueError(f"grid sampler: {key} needs choices or a step (a continuous range has no grid)")


def non_finite_path(data: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The location (keys and indices) of the first NaN or ±Infinity in ``data`` (nested dicts and lists), else None.

    JSON has no such numbers, Python's parser accepts them, and PostgreSQL's JSON columns refuse them: a spec that
    holds one could never be stored."""
    if isinstance(data, float):
        return path if not math.isfinite(data) else None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list | tuple) else ()
    for key, value in items:
        found = non_finite_path(value, (*path, key))
        if found is not None:
            return found
    return None


def spec_changes(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The top-level fields in which two canonical specs differ, sorted (resume allows :data:`RESUMABLE_FIELDS`)."""
    return sorted(k for k in set(stored) | set(new) if stored.get(k) != new.get(k))


def _check_trial_key(key: str, where: str) -> None:
    if key in _RESERVED:
        raise ValueError(f"{where}: {key!r} is set by the spec itself, not here")
    if key not in trial_keys():
        raise ValueError(f"{where}: unknown trial config key {key!r}{_did_you_mean(key)}")


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, trial_keys(), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
