"""Optuna distributions, samplers and Ray Tune schedulers built from a spec, by the names of
:mod:`search_spaces.algorithms` (where each one's accepted ``options`` are listed and checked at submit)."""

from __future__ import annotations

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from search_spaces.spec import CategoricalParam, FloatParam, StudySpec

from ..errors import InvalidSpecError

__all__ = ["SAMPLER_CLASSES", "build_distributions", "build_sampler", "build_scheduler"]

#: The Optuna class behind each sampler name (``grid`` is built apart: it needs the spec's grid).
SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
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
    try:
        return SAMPLER_CLASSES[s.name](seed=s.seed, **kwargs)
    except (TypeError, ValueError) as e:  # a value the table's types allow but the sampler refuses
        raise InvalidSpecError(f"sampler.options do not fit the {s.name} sampler: {e}") from None


def build_scheduler(spec: StudySpec):
    """The spec's Ray Tune scheduler, on ``epoch`` as time (None for ``none``).

    ``hyperband`` is asynchronous HyperBand (ASHA over several brackets): it never pauses a trial, so trials need
    no checkpoints to resume.
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from ._tune import MedianStoppingNoPause

    s = spec.scheduler
    if s.name == "none":
        return None
    objective = spec.objectives[0]
    common = dict(
        time_attr="epoch", metric=objective.metric, mode="max" if objective.direction == "maximize" else "min"
    )
    max_t = s.max_t or spec.workload.epochs
    try:
        if s.name in ("asha", "hyperband"):
            brackets = 1 if s.name == "asha" else 3
            options = {"brackets": brackets, **s.options}
            return AsyncHyperBandScheduler(
                **common, max_t=max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor, **options
            )
        return MedianStoppingNoPause(**common, grace_period=s.grace_period, **s.options)
    except (TypeError, ValueError) as e:
        raise InvalidSpecError(f"scheduler.options do not fit the {s.name} scheduler: {e}") from None
