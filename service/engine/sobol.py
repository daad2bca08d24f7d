"""A scrambled Sobol' sampler whose dimensions follow the spec's order, so arms that share a parameter draw it alike.

Optuna's ``QMCSampler`` orders its dimensions by parameter name and samples its first trial at random (independent
sampling), so two arms whose spaces differ (TVLARS: ``lr``, ``lam_steps``, ``delay_fraction``; LARS: ``lr``) draw
different ``lr`` quantiles. :class:`SobolSampler`:

- Dimension ``k`` belongs to the spec's ``k``-th searched parameter (a comparison writes ``lr`` first, then the
  arm's others in its space's fixed order), whatever the other parameters' names or number.
- Each dimension is scrambled on its own (``scipy.stats.qmc.Sobol``'s linear matrix scramble and digital shift,
  drawn from ``(seed, k)``), so dimension ``k`` of point ``i`` is the same number in every study with that sampler
  seed: a comparison gives every arm of a repeat the same seed, hence the same ``lr`` quantiles, and each repeat its
  own scramble.
- Point ``i`` goes to the ``i``-th trial the sampler draws; enqueued trials (Optuna's ``fixed_params``) consume no
  index. The index is counted from the study's stored trials, so a resumed study carries on where it stopped.

Values map the unit interval onto each distribution: log ranges in log space, stepped ranges to their grid, int
ranges over ``[low, high + 1)`` floored, categoricals by equal shares.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import qmc

__all__ = ["SobolSampler", "from_unit"]

#: Optuna's system attr that marks an enqueued trial's params.
_FIXED = "fixed_params"


class SobolSampler(optuna.samplers.BaseSampler):
    """Scrambled Sobol' points over the parameters in ``order`` (see the module docstring)."""

    def __init__(self, seed: int | None = None, order: Sequence[str] = (), scramble: bool = True) -> None:
        self._seed = 0 if seed is None else int(seed)
        self._order = list(order)
        self._scramble = scramble
        self._index: dict[int, int] = {}  # trial number -> its Sobol index
        self._columns: dict[int, np.ndarray] = {}  # dimension -> its values for indices 0..len-1

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return from_unit(self.unit(self.index(study, trial), self.dimension(param_name)), param_distribution)

    def dimension(self, name: str) -> int:
        """The dimension of parameter ``name``: its place in ``order`` (an unknown name is appended)."""
        if name not in self._order:
            self._order.append(name)
        return self._order.index(name)

    def index(self, study: optuna.Study, trial: FrozenTrial) -> int:
        """The Sobol index of ``trial``: how many earlier trials of the study the sampler drew (not enqueued)."""
        if trial.number not in self._index:
            earlier = study.get_trials(deepcopy=False)
            self._index[trial.number] = sum(
                1 for t in earlier if t.number < trial.number and _FIXED not in t.system_attrs
            )
        return self._index[trial.number]

    def unit(self, index: int, dim: int) -> float:
        """Point ``index``'s coordinate in dimension ``dim``, in [0, 1)."""
        column = self._columns.get(dim)
        if column is None or len(column) <= index:
            n = 1 << max(4, math.ceil(math.log2(index + 1)))
            engine = qmc.Sobol(d=dim + 1, scramble=self._scramble, seed=np.random.default_rng([self._seed, dim]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                column = engine.random(n)[:, dim]
            self._columns[dim] = column
        return float(column[index])

    def after_trial(self, study, trial, state: TrialState, values) -> None:
        self._index.pop(trial.number, None)


def from_unit(u: float, dist: BaseDistribution) -> Any:
    """``u`` in [0, 1) as a value of ``dist`` (module docstring)."""
    u = min(max(u, 0.0), math.nextafter(1.0, 0.0))
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, IntDistribution):
        if dist.log:
            value = math.exp(math.log(dist.low) + u * (math.log(dist.high + 1) - math.log(dist.low)))
        else:
            value = dist.low + u * (dist.high + 1 - dist.low)
        value = dist.low + ((int(math.floor(value)) - dist.low) // dist.step) * dist.step
        return int(min(max(value, dist.low), dist.high))
    assert isinstance(dist, FloatDistribution)
    if dist.log:
        return float(min(dist.high, math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))))
    if dist.step is not None:
        n = int(round((dist.high - dist.low) / dist.step)) + 1
        return float(dist.low + min(int(u * n), n - 1) * dist.step)
    return float(dist.low + u * (dist.high - dist.low))
