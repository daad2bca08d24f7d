"""Optuna distributions, samplers and Ray Tune schedulers built from a spec, by the names of
:mod:`search_spaces.algorithms` (where each one's accepted ``options`` are listed and checked at submit)."""

from __future__ import annotations

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from search_spaces.spec import CategoricalParam, FloatParam, IntParam, StudySpec
from tvlars.train.metrics import Metric

from ..errors import InvalidSpecError
from .sobol import SobolSampler

__all__ = [
    "CHECKPOINTS_KEPT",
    "SAMPLER_CLASSES",
    "build_distributions",
    "build_pbt",
    "build_sampler",
    "build_scheduler",
]

#: The Optuna class behind each sampler name (``grid`` is built apart: it needs the spec's grid).
SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "sobol": SobolSampler,
}


def build_distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """The spec's search space as Optuna distributions, converted directly (not through Ray's search space)."""
    out: dict[str, BaseDistribution] = {}
    for key, p in spec.search_space.items():
        if isinstance(p, CategoricalParam):
            out[key] = CategoricalDistribution(p.choices)
        elif isinstance(p, FloatParam):
            out[key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        else:
            out[key] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose ``after_trial`` does not call ``study.stop()`` when the grid is done: outside
    ``study.optimize`` that raises inside ``tell``. The engine's budget (and its grid check) ends the study."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def build_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler, seeded; its ``options`` (checked by the spec) go to the constructor."""
    s = spec.sampler
    kwargs = dict(s.options)
    if s.name == "grid":
        return _AskTellGridSampler(spec.grid(), seed=s.seed, **kwargs)
    if s.name == "tpe":
        kwargs.setdefault("multivariate", True)
    if s.name == "sobol":  # dimensions in the spec's order (lr first in a comparison), not by name
        kwargs["order"] = list(spec.search_space)
    try:
        return SAMPLER_CLASSES[s.name](seed=s.seed, **kwargs)
    except (TypeError, ValueError) as e:  # a value the table's types allow but the sampler refuses
        raise InvalidSpecError(f"sampler.options do not fit the {s.name} sampler: {e}") from None


#: Checkpoints Tune keeps per trial, by scheduler: PBT clones a member's latest while it may write the next one.
CHECKPOINTS_KEPT = {"pbt": 4}


def build_scheduler(spec: StudySpec):
    """The spec's Ray Tune scheduler, on ``epoch`` as time (None for ``none``).

    ``hyperband`` is Ray's synchronous HyperBand: a trial pauses at each rung until its bracket's others get there,
    and resumes from its checkpoint. ``pbt`` is Ray's population-based training over every searched key (see
    :func:`build_pbt`). Both need a checkpoint at every epoch (``checkpoint_every: 1``, the default).
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler

    from ._tune import MedianStoppingNoPause

    s = spec.scheduler
    if s.name == "none":
        return None
    objective = spec.objectives[0]
    mode = "max" if objective.direction == "maximize" else "min"
    common = dict(time_attr=Metric.EPOCH.value, metric=objective.metric, mode=mode)
    max_t = s.max_t or spec.workload.epochs
    try:
        if s.name == "asha":
            return AsyncHyperBandScheduler(
                **common, max_t=max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor, **s.options
            )
        if s.name == "hyperband":
            return HyperBandScheduler(**common, max_t=max_t, reduction_factor=s.reduction_factor, **s.options)
        if s.name == "pbt":
            return build_pbt(spec, common)
        return MedianStoppingNoPause(**common, grace_period=s.grace_period, **s.options)
    except (TypeError, ValueError) as e:
        raise InvalidSpecError(f"scheduler.options do not fit the {s.name} scheduler: {e}") from None


def build_pbt(spec: StudySpec, common: dict):
    """Ray's PopulationBasedTraining over every searched key, each kept inside its range.

    A member exploits every ``perturbation_interval`` epochs (default: a quarter of the epochs, at least 1): if it
    is in the bottom ``quantile_fraction`` it takes the state of a top member and perturbs that member's values
    (×0.8 / ×1.2, a neighbouring choice, or a fresh draw with ``resample_probability``), clipped to the space.
    """
    from ray import tune

    from ._tune import OptunaPopulationBasedTraining

    mutations: dict[str, object] = {}
    for key, p in spec.search_space.items():
        if isinstance(p, CategoricalParam):
            mutations[key] = list(p.choices)
        elif isinstance(p, FloatParam):
            mutations[key] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
        else:
            mutations[key] = tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)
    options = {"perturbation_interval": max(1, spec.workload.epochs // 4), **spec.scheduler.options}
    if "perturbation_factors" in options:
        options["perturbation_factors"] = tuple(options["perturbation_factors"])
    return OptunaPopulationBasedTraining(
        **common,
        hyperparam_mutations={"trial": mutations},
        custom_explore_fn=_InRange(spec),
        **options,
    )


class _InRange:
    """PBT's explore step, kept inside the search space: a perturbed value is clipped to its range (and step)."""

    def __init__(self, spec: StudySpec) -> None:
        self.space = {k: p for k, p in spec.search_space.items() if not isinstance(p, CategoricalParam)}

    def __call__(self, config: dict) -> dict:
        trial = config["trial"]
        for key, p in self.space.items():
            value = min(max(trial[key], p.low), p.high)
            if p.step:
                value = p.low + round((value - p.low) / p.step) * p.step
            trial[key] = int(value) if isinstance(p, IntParam) else float(value)
        return config
