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
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

__all__ = ["MULTI_OBJECTIVE_SAMPLERS", "SAMPLERS", "SCHEDULERS", "Algorithm", "check_options"]


@dataclass(frozen=True)
class Algorithm:
    """One sampler or scheduler: what it is, and each option's type (what its constructor takes from ``options``)."""

    description: str
    options: dict[str, Any] = field(default_factory=dict)
    multi_objective: bool = False


_NonNegInt = int
SAMPLERS: dict[str, Algorithm] = {
    "tpe": Algorithm(
        "Optuna TPESampler (multivariate by default)",
        {
            "consider_prior": bool,
            "prior_weight": float,
            "consider_magic_clip": bool,
            "consider_endpoints": bool,
            "n_startup_trials": _NonNegInt,
            "n_ei_candidates": int,
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
            "x0": dict[str, Any],
            "sigma0": float,
            "n_startup_trials": _NonNegInt,
            "warn_independent_sampling": bool,
            "consider_pruned_trials": bool,
            "popsize": int,
            "inc_popsize": int,
            "use_separable_cma": bool,
            "with_margin": bool,
            "lr_adapt": bool,
        },
    ),
    "gp": Algorithm(
        "Optuna GPSampler (Gaussian process)",
        {"n_startup_trials": _NonNegInt, "deterministic_objective": bool, "warn_independent_sampling": bool},
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
        {"population_size": int, "mutation_prob": float | None, "crossover_prob": float, "swapping_prob": float},
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
            "perturbation_interval": int,
            "burn_in_period": int,
            "quantile_fraction": float,
            "resample_probability": float,
            "perturbation_factors": list[float],
        },
    ),
    "median": Algorithm(
        "Ray Tune median stopping rule (never pauses a trial)",
        {"min_samples_required": int, "min_time_slice": int, "hard_stop": bool},
    ),
}
MULTI_OBJECTIVE_SAMPLERS = tuple(name for name, a in SAMPLERS.items() if a.multi_objective)


def check_options(kind: Literal["sampler", "scheduler"], name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the table: each a known option of ``name``, of its type. ValueError if not."""
    table = SAMPLERS if kind == "sampler" else SCHEDULERS
    allowed = table[name].options
    out = {}
    for key, value in options.items():
        if key not in allowed:
            accepts = ", ".join(sorted(allowed)) or "no options"
            raise ValueError(f"{name} {kind}: unknown option {key!r} (accepts {accepts})")
        try:
            out[key] = _adapter(allowed[key]).validate_python(value, strict=True)
        except ValidationError as e:
            raise ValueError(f"{name} {kind}: option {key!r}: {e.errors()[0]['msg']}") from None
    return out


_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(tp: Any) -> TypeAdapter:
    key = repr(tp)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(tp)
    return _ADAPTERS[key]
