"""The samplers and schedulers a spec may name, and the ``options`` each one accepts: the one table of both.

The spec validates ``sampler.options`` / ``scheduler.options`` against it (a bad option is a 422 at submit), and
the engine builds each one by the same name (``service.engine.factories``); a test checks that every option listed
here is a parameter of the class the engine builds.

>>> sorted(SAMPLERS)[:3]
['cmaes', 'gp', 'grid']
>>> check_options("sampler", "tpe", {"n_startup_trials": 5})
{'n_startup_trials': 5}
>>> check_options("sampler", "tpe", {"n_startup": 5})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: tpe sampler: unknown option 'n_startup' (accepts consider_endpoints, consider_magic_clip, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

__all__ = ["MULTI_OBJECTIVE_SAMPLERS", "SAMPLERS", "SCHEDULERS", "Algorithm", "check_options", "options_model"]


@dataclass(frozen=True)
class Algorithm:
    """One sampler or scheduler: what it is, and each option's type (what its constructor takes from ``options``)."""

    description: str
    options: dict[str, Any] = field(default_factory=dict)
    multi_objective: bool = False


#: Bounds on the numbers an option may carry: each is work or memory a worker spends per trial or per sample, so a
#: value far past any useful one is refused at submit instead of run (a TPE sampler drawing 1e9 candidates).
MAX_CANDIDATES = 10_000
MAX_STARTUP_TRIALS = 10_000
MAX_POPULATION = 10_000
_Count = Annotated[int, Field(ge=0, le=MAX_STARTUP_TRIALS)]  # trials, epochs
_Positive = Annotated[int, Field(ge=1, le=MAX_POPULATION)]
_Weight = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
_Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Fraction = Annotated[float, Field(gt=0, le=0.5, allow_inf_nan=False)]
SAMPLERS: dict[str, Algorithm] = {
    "tpe": Algorithm(
        "Optuna TPESampler (multivariate by default)",
        {
            "consider_prior": bool,
            "prior_weight": _Weight,
            "consider_magic_clip": bool,
            "consider_endpoints": bool,
            "n_startup_trials": _Count,
            "n_ei_candidates": Annotated[int, Field(ge=1, le=MAX_CANDIDATES)],
            "multivariate": bool,
            "group": bool,
            "warn_independent_sampling": bool,
            "constant_liar": bool,
        },
        multi_objective=True,
    ),
    "random": Algorithm("Optuna RandomSampler", multi_objective=True),
    "grid": Algorithm("every point of a stepped/categorical space (Optuna GridSampler)", multi_objective=True),
    "cmaes": Algorithm(
        "Optuna CmaEsSampler",
        {
            "x0": Annotated[dict[str, Annotated[float, Field(allow_inf_nan=False)]], Field(max_length=64)],
            "sigma0": Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)],
            "n_startup_trials": _Count,
            "warn_independent_sampling": bool,
            "consider_pruned_trials": bool,
            "popsize": Annotated[int, Field(ge=2, le=MAX_POPULATION)],
            "inc_popsize": Annotated[int, Field(ge=1, le=10)],
            "use_separable_cma": bool,
            "with_margin": bool,
            "lr_adapt": bool,
        },
    ),
    "gp": Algorithm(
        "Optuna GPSampler (Gaussian process)",
        {"n_startup_trials": _Count, "deterministic_objective": bool, "warn_independent_sampling": bool},
        multi_objective=True,
    ),
    "qmc": Algorithm(
        "Optuna QMCSampler (quasi-Monte Carlo)",
        {
            "qmc_type": Literal["sobol", "halton"],
            "scramble": bool,
            "warn_asynchronous_seeding": bool,
            "warn_independent_sampling": bool,
        },
        multi_objective=True,
    ),
    "sobol": Algorithm(
        "scrambled Sobol' points (tvlars-tune's own, over scipy.stats.qmc): dimensions in the search space's order, "
        "each scrambled from (seed, dimension), so studies with one seed draw a shared parameter alike; enqueued "
        "trials use no point",
        {"scramble": bool},
    ),
    "nsga2": Algorithm(
        "Optuna NSGAIISampler (multi-objective)",
        {
            "population_size": Annotated[int, Field(ge=2, le=MAX_POPULATION)],
            "mutation_prob": _Probability | None,
            "crossover_prob": _Probability,
            "swapping_prob": _Probability,
        },
        multi_objective=True,
    ),
}
SCHEDULERS: dict[str, Algorithm] = {
    "none": Algorithm("every trial runs all its epochs"),
    "asha": Algorithm("Ray Tune ASHA (AsyncHyperBandScheduler, one bracket)", {"stop_last_trials": bool}),
    "hyperband": Algorithm(
        "Ray Tune synchronous HyperBand (HyperBandScheduler): trials pause at each rung and resume from checkpoints",
        {"stop_last_trials": bool},
    ),
    "pbt": Algorithm(
        "Ray Tune population-based training over the searched keys: one Optuna trial per member, exploits "
        "recorded in its user attr pbt_lineage",
        {
            "perturbation_interval": _Positive,
            "burn_in_period": _Count,
            "quantile_fraction": _Fraction,
            "resample_probability": _Probability,
            "perturbation_factors": Annotated[
                list[Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]], Field(min_length=1, max_length=16)
            ],
        },
    ),
    "median": Algorithm(
        "Ray Tune median stopping rule (never pauses a trial)",
        {"min_samples_required": _Positive, "min_time_slice": _Count, "hard_stop": bool},
    ),
}
MULTI_OBJECTIVE_SAMPLERS = tuple(name for name, a in SAMPLERS.items() if a.multi_objective)


def check_options(kind: Literal["sampler", "scheduler"], name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` validated by ``name``'s options model: each a known option, of its type, within its bounds.
    ValueError naming the option if not."""
    table = SAMPLERS if kind == "sampler" else SCHEDULERS
    allowed = table[name].options
    for key in options:
        if key not in allowed:
            accepts = ", ".join(sorted(allowed)) or "no options"
            raise ValueError(f"{name} {kind}: unknown option {key!r} (accepts {accepts})")
    try:
        checked = options_model(kind, name).model_validate(options)
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(map(str, error["loc"]))
        raise ValueError(f"{name} {kind}: option {where!r}: {error['msg']}") from None
    return {key: getattr(checked, key) for key in options}


_MODELS: dict[tuple[str, str], type[BaseModel]] = {}


def options_model(kind: Literal["sampler", "scheduler"], name: str) -> type[BaseModel]:
    """The pydantic model of ``name``'s options: every option optional, typed and bounded, unknown ones refused."""
    if (kind, name) not in _MODELS:
        table = SAMPLERS if kind == "sampler" else SCHEDULERS
        fields: dict[str, Any] = {key: (tp | None, None) for key, tp in table[name].options.items()}
        config = ConfigDict(extra="forbid", strict=True)
        _MODELS[kind, name] = create_model(f"{name.title()}{kind.title()}Options", __config__=config, **fields)
    return _MODELS[kind, name]
