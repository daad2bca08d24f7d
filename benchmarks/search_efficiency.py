"""Search efficiency: the paper-style full grid against TPE + ASHA, on MNIST-1D at a large batch.

The grid is the paper's shape (LR x lambda, every point trained for every epoch). TPE + ASHA picks among the same
grid points (the headline), and also searches the same ranges continuously; ASHA stops weak trials early. Every
trial uses one seed (``vary_seed: false``), so its accuracy is a function of its hyperparameters and the grid's best
is not a lucky initialisation. The figure: the share of the grid's epoch budget TPE + ASHA has spent when one of its
trials first reaches the grid's best test accuracy. Epochs are counted in the order trials finished (a trial that
finished earlier was paid for earlier); the reaching trial counts up to the epoch where it reached it.

    python benchmarks/search_efficiency.py [--epochs 12] [--tpe-trials 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.engine import ensure_ray, load_study, run_study  # noqa: E402

LRS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
LAMS = [1e-6, 1e-5, 1e-4, 1e-3, 5e-3, 1e-2]


def workload(epochs: int) -> dict:
    # 16000 training examples at batch 4000: 4 steps per epoch, a quarter of the data per step
    return {
        "task": "classification",
        "dataset": "mnist1d",
        "dataset_options": {"num_samples": 20000},
        "model": "mlp",
        "epochs": epochs,
        "batch_size": 4000,
    }


def grid_spec(epochs: int) -> dict:
    return {
        "name": f"grid-{uuid.uuid4().hex[:6]}",
        "workload": workload(epochs),
        "optimizer": "tvlars",
        "search_space": {
            "lr": {"type": "categorical", "choices": LRS},
            "lam": {"type": "categorical", "choices": LAMS},
        },
        "sampler": {"name": "grid", "seed": 0},
        "scheduler": {"name": "none"},
        "budget": {"max_concurrent": 2, "max_failed": 3},
        "vary_seed": False,
    }


def tpe_asha_spec(epochs: int, n_trials: int, space: str) -> dict:
    """TPE + ASHA over the grid's own points (``space="grid"``) or the same ranges continuously."""
    if space == "grid":
        search_space = {
            "lr": {"type": "categorical", "choices": LRS},
            "lam": {"type": "categorical", "choices": LAMS},
        }
    else:
        search_space = {
            "lr": {"type": "float", "low": LRS[0], "high": LRS[-1], "log": True},
            "lam": {"type": "float", "low": LAMS[0], "high": LAMS[-1], "log": True},
        }
    return {
        "name": f"tpe-asha-{space}-{uuid.uuid4().hex[:6]}",
        "workload": workload(epochs),
        "optimizer": "tvlars",
        "search_space": search_space,
        "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 8}},
        "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 3},
        # one at a time: ASHA's and TPE's decisions then depend on results alone, not on which of two concurrent
        # trials reported first, so the figure repeats run to run (epochs, not seconds, are what is counted)
        "budget": {"n_trials": n_trials, "max_concurrent": 1, "max_failed": 3},
        "vary_seed": False,
    }


def epochs_to_reach(trials, target: float) -> int | None:
    """Epochs spent, in finishing order, until a trial's test accuracy first reaches ``target``."""
    spent = 0
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        curve = [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
        for epoch, acc in enumerate(curve, 1):
            if acc >= target:
                return spent + epoch
        spent += len(curve)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--tpe-trials", type=int, default=60)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='tvlars-search-')) / 'studies.db'}"
    ensure_ray()

    start = time.perf_counter()
    grid = grid_spec(args.epochs)
    run_study(grid, url)
    grid_trials = load_study(url, grid["name"]).get_trials(states=(TrialState.COMPLETE,))
    grid_epochs = sum(len(t.intermediate_values) for t in grid_trials)
    best = max(grid_trials, key=lambda t: t.value)
    print(
        f"grid: {len(grid_trials)} points x {args.epochs} epochs = {grid_epochs} epochs, "
        f"best test_acc {best.value:.4f} at {best.params} ({time.perf_counter() - start:.0f} s)"
    )

    shares = {}
    for space in ("grid", "continuous"):
        start = time.perf_counter()
        tpe = tpe_asha_spec(args.epochs, args.tpe_trials, space)
        run_study(tpe, url)
        tpe_trials = load_study(url, tpe["name"]).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        tpe_epochs = sum(len(t.intermediate_values) for t in tpe_trials)
        tpe_best = max(max(t.intermediate_values.values()) for t in tpe_trials)
        pruned = sum(t.state == TrialState.PRUNED for t in tpe_trials)
        reached = epochs_to_reach(tpe_trials, best.value)
        shares[space] = None if reached is None else reached / grid_epochs
        print(
            f"TPE+ASHA over the {space} space: {len(tpe_trials)} trials ({pruned} pruned), {tpe_epochs} epochs, "
            f"best {tpe_best:.4f}; "
            + (f"reached {best.value:.4f} after {reached} epochs" if reached else "never reached the grid's best")
            + f" ({time.perf_counter() - start:.0f} s)"
        )
    if shares["continuous"] is not None:
        print(f"  continuous space: {shares['continuous']:.2f} of the grid's epoch budget")
    headline = shares["grid"]
    figure = f"{headline:.2f}" if headline is not None else f">{tpe_epochs / grid_epochs:.2f}"
    print(f"search_efficiency: {figure} of the grid's epoch budget (goal <= 0.30)")


if __name__ == "__main__":
    main()
