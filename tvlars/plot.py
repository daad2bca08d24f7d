"""Plots of φ(t) and the warm-up schedule, so a user sees what each knob does. Needs the ``plot`` extra."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .optim import phi
from .schedules import warmup_cosine_factor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["phi_curves"]


def phi_curves(
    total_steps: int = 10_000,
    lam: float = 1e-3,
    delay: float = 2_000,
    alpha: float = 1.0,
    gamma_min: float = 0.0,
    lams: Sequence[float] = (1e-4, 5e-4, 1e-3, 5e-3),
    delays: Sequence[float] = (0, 1_000, 2_000, 4_000),
    alphas: Sequence[float] = (0.1, 0.5, 1.0, 2.0),
    gamma_mins: Sequence[float] = (0.0, 0.05, 0.1, 0.2),
    warmup_fraction: float = 0.2,
    path: str | Path | None = None,
) -> Figure:
    """A figure of φ(t): one panel per knob (others held at the given values), and the warm-up schedule.

    The last panel sets φ(t) beside LARS's linear warm-up → cosine multiplier (warm-up over ``warmup_fraction`` of
    the run, as the paper's 20 of 100 epochs): warm-up starts small, TVLARS starts large and decays.
    Saved to ``path`` when given.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("tvlars.plot needs matplotlib: pip install 'tvlars-tune[plot]'") from e

    t = np.arange(1, total_steps + 1)
    base = dict(lam=lam, delay=delay, alpha=alpha, gamma_min=gamma_min)
    panels = [
        ("lam", lams, "λ (decay rate)"),
        ("delay", delays, "d_e (delay, steps)"),
        ("alpha", alphas, "α"),
        ("gamma_min", gamma_mins, "γ_min (floor)"),
    ]
    fig, axes = plt.subplots(1, 5, figsize=(22, 4), constrained_layout=True)
    for ax, (knob, values, label) in zip(axes, panels, strict=False):
        for value in values:
            ax.plot(t, phi(t, **{**base, knob: value}), label=f"{knob} = {value:g}")
        ax.set_title(f"φ(t) varying {label}")
        ax.set_xlabel("step t")
        ax.set_ylabel("φ(t)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    warmup = int(warmup_fraction * total_steps)
    schedule = [warmup_cosine_factor(int(s) - 1, warmup, total_steps) for s in t]
    ax.plot(t, schedule, label="LARS warm-up → cosine (LR multiplier)")
    ax.plot(t, phi(t, **base) / phi(1, **base), label=f"TVLARS φ(t)/φ(1), λ={lam:g}, d_e={delay:g}")
    ax.set_title("warm-up LARS vs TVLARS")
    ax.set_xlabel("step t")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(
        f"TVLARS φ(t) = 1/(α + exp(λ(t − d_e))) + γ_min   (defaults: λ={lam:g}, d_e={delay:g}, α={alpha:g}, "
        f"γ_min={gamma_min:g})"
    )
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


if __name__ == "__main__":
    phi_curves(path=Path(__file__).resolve().parents[1] / "docs" / "phi.png")
