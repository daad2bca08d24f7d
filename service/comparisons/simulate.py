"""A simulation of the verdict rules (R2–R6 of :mod:`search_spaces.comparison`), numpy only and vectorised.

Each simulated comparison has one arm under test and ``m`` other arms at one batch size; every arm is tuned
``n_max`` times and each repeat's winner re-run on ``n_seeds`` seeds nested in the repeat and shared by the arms (R1).
A score is

    score[arm, r, j] = μ_arm + u[arm, r] + v[r, j] + e[arm, r, j]

with ``u`` the tuning repeat's effect (another tuning picks another winner: independent per arm), ``v`` the seed's
effect (initial weights and data order: shared by every arm of the repeat, so it cancels in a paired difference) and
``e`` an arm × seed interaction. The verdicts are then computed exactly as a comparison computes them: ``d_r`` per
repeat, a t interval at each look ``n_min … n_max`` at the α :func:`.stats.look_alphas` spends there (``α/m`` per
verdict, R3), the first look that decides frozen (:func:`.stats.sequential_verdicts`).

:func:`figures` gives the three numbers the rules promise (``python -m service.comparisons.simulate`` prints them):

- **family-wise error** under the null (every μ equal): the share of comparisons with any ``better``/``worse``,
  to stay ≤ α + 3 SE (SE = √(α(1 − α)/n_sims));
- **P(equivalent)** at a true difference of exactly the margin (+δ), per verdict: ≤ α/m;
- **power** at a true difference of the MDD (:func:`.stats.minimum_detectable_difference` with the true SD of
  ``d_r``, ``n_max`` and the last look's α): the share of ``better``, about 0.80.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .stats import Verdict, look_alphas, minimum_detectable_difference, sequential_verdicts

__all__ = ["SimulationFigures", "figures", "simulate"]


def simulate(
    *,
    n_sims: int = 4_000,
    m: int = 3,
    n_min: int = 3,
    n_max: int = 8,
    n_seeds: int = 3,
    alpha: float = 0.05,
    margin: float = 1.0,
    delta: float = 0.0,
    sd_repeat: float = 0.5,
    sd_seed: float = 1.0,
    sd_noise: float = 0.5,
    rng: np.random.Generator | int | None = 0,
) -> np.ndarray:
    """``n_sims`` comparisons' verdicts, an ``(n_sims, m)`` array of verdict strings; the arm under test is
    ``delta`` (pp) above the ``m`` others. Units are percentage points."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    arms = m + 1
    mu = np.zeros(arms)
    mu[0] = delta
    u = gen.normal(0, sd_repeat, (n_sims, arms, n_max, 1))
    v = gen.normal(0, sd_seed, (n_sims, 1, n_max, n_seeds))
    e = gen.normal(0, sd_noise, (n_sims, arms, n_max, n_seeds))
    scores = mu[None, :, None, None] + u + v + e
    d = (scores[:, :1] - scores[:, 1:]).mean(axis=-1)  # (n_sims, m, n_max): d_r of arm 0 against each other arm
    ns = list(range(n_min, n_max + 1))
    alphas = look_alphas(alpha, m, n_min, n_max)
    means = np.stack([d[..., :n].mean(axis=-1) for n in ns], axis=-1)
    sds = np.stack([d[..., :n].std(axis=-1, ddof=1) for n in ns], axis=-1)
    verdicts, _ = sequential_verdicts(means, sds, ns, [alphas[n] for n in ns], margin)
    return verdicts


def sd_of_difference(sd_repeat: float, sd_noise: float, n_seeds: int) -> float:
    """The true SD of ``d_r``: two arms' repeat effects and interactions (the shared seed effect cancels)."""
    return math.sqrt(2 * sd_repeat**2 + 2 * sd_noise**2 / n_seeds)


@dataclass(frozen=True)
class SimulationFigures:
    """The simulated operating characteristics of the verdict rules (:func:`figures`)."""

    n_sims: int
    m: int
    n_min: int
    n_max: int
    n_seeds: int
    alpha: float
    margin: float
    family_wise_error: float
    family_wise_bound: float  # α + 3 SE
    p_equivalent_at_margin: float
    equivalent_bound: float  # α / m
    mdd: float
    power_at_mdd: float

    def lines(self) -> list[str]:
        return [
            f"{self.n_sims} simulated comparisons, m = {self.m} verdicts, looks at {self.n_min}..{self.n_max} repeats, "
            f"{self.n_seeds} seeds per repeat, alpha = {self.alpha}, margin = {self.margin} pp",
            f"family-wise error under the null: {self.family_wise_error:.4f} (bound alpha + 3 SE = "
            f"{self.family_wise_bound:.4f})",
            f"P(equivalent) at a true difference of the margin: {self.p_equivalent_at_margin:.4f} (bound alpha/m = "
            f"{self.equivalent_bound:.4f})",
            f"power at a true difference of the MDD ({self.mdd:.3f} pp): {self.power_at_mdd:.4f} (target 0.80 ± 0.04)",
        ]

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def figures(
    *,
    n_sims: int = 4_000,
    m: int = 3,
    n_min: int = 3,
    n_max: int = 8,
    n_seeds: int = 3,
    alpha: float = 0.05,
    margin: float = 1.0,
    sd_repeat: float = 0.5,
    sd_seed: float = 1.0,
    sd_noise: float = 0.5,
    seed: int = 0,
) -> SimulationFigures:
    """Family-wise error under the null, P(equivalent) at +margin and power at +MDD (module docstring)."""
    common = dict(n_sims=n_sims, m=m, n_min=n_min, n_max=n_max, n_seeds=n_seeds, alpha=alpha, margin=margin,
                  sd_repeat=sd_repeat, sd_seed=sd_seed, sd_noise=sd_noise)  # fmt: skip
    gen = np.random.default_rng(seed)
    decided = (Verdict.BETTER.value, Verdict.WORSE.value)
    null = simulate(delta=0.0, rng=gen, **common)
    fwe = float(np.isin(null, decided).any(axis=1).mean())
    at_margin = simulate(delta=margin, rng=gen, **common)
    p_equivalent = float((at_margin == Verdict.EQUIVALENT.value).mean())
    final_alpha = look_alphas(alpha, m, n_min, n_max)[n_max]
    mdd = minimum_detectable_difference(sd_of_difference(sd_repeat, sd_noise, n_seeds), n_max, final_alpha)
    at_mdd = simulate(delta=mdd, rng=gen, **common)
    power = float((at_mdd == Verdict.BETTER.value).mean())
    return SimulationFigures(
        n_sims=n_sims,
        m=m,
        n_min=n_min,
        n_max=n_max,
        n_seeds=n_seeds,
        alpha=alpha,
        margin=margin,
        family_wise_error=fwe,
        family_wise_bound=alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_sims),
        p_equivalent_at_margin=p_equivalent,
        equivalent_bound=alpha / m,
        mdd=mdd,
        power_at_mdd=power,
    )


if __name__ == "__main__":  # python -m service.comparisons.simulate
    print("\n".join(figures().lines()))
