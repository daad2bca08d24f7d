"""Factories for study specs the tests run: small MNIST-1D studies that finish in seconds on a CPU."""

from __future__ import annotations

from typing import Any

from search_spaces import merge


def quick_spec(name: str, **overrides: Any) -> dict[str, Any]:
    """A TVLARS study on MNIST-1D: an MLP at batch 1000 (4 steps per epoch), a wide LR range so ASHA has losers."""
    base = {
        "name": name,
        "workload": {"task": "classification", "dataset": "mnist1d", "model": "mlp", "epochs": 6, "batch_size": 1000},
        "optimizer": "tvlars",
        "search_space": {
            "lr": {"type": "float", "low": 0.3, "high": 60.0, "log": True},
            "lam": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        },
        "fixed": {"weight_decay": 5e-4, "momentum": 0.9},
        "objective": {"metric": "val_acc", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
        "budget": {"n_trials": 6, "max_concurrent": 2, "max_failed": 2},
        "resources": {"cpu": 1, "gpu": 0},
    }
    return merge(base, overrides)


def smallest_comparison(name: str, **overrides: Any) -> dict[str, Any]:
    """The smallest comparison there is: two arms at one batch size, one 1-epoch tuning trial each and one tuning
    repeat (its verdicts say inconclusive), two re-run seeds."""
    base = {
        "name": name,
        "workload": {"task": "classification", "dataset": "mnist1d", "model": "mlp", "epochs": 1},
        "arms": [{"optimizer": "tvlars"}, {"optimizer": "lamb", "lr_center": 0.03}],
        "batch_sizes": [3000],
        "budget": {"n_trials": 1, "max_concurrent": 1, "max_failed": 1},
        "sampler": {"name": "random", "seed": 0},
        "scheduler": {"name": "none"},
        "rerun": {"top_k": 1, "seeds": 2},
        "tuning_repeats": 1,
    }
    return merge(base, overrides)
