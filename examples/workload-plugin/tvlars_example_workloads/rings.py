"""``rings``: a generated tabular classification task, nothing downloaded.

Each example is a point in ``features`` dimensions. Its class is which of ``classes`` concentric shells its
distance from the origin falls in (the shells hold equal shares of the points), measured in the first
``informative`` coordinates only; the other coordinates are noise. ``label_noise`` of the labels are flipped at
random, so no model reaches 100 %. Linear models fail (the classes are not linearly separable); an MLP learns it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tvlars.data import ArrayDataset


def load(
    data_dir: Path | None,
    *,
    n_train: int = 4000,
    n_test: int = 1000,
    features: int = 16,
    informative: int = 4,
    classes: int = 4,
    label_noise: float = 0.05,
    seed: int = 0,
) -> ArrayDataset:
    """Concentric shells in a few of many tabular features (generated; options set the size and difficulty)."""
    for name, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1), ("features", features, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"Invalid {name}: {value!r} (an integer >= {low})")
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"Invalid classes: {classes!r} (an integer >= 2)")
    if not isinstance(informative, int) or not 1 <= informative <= features:
        raise ValueError(f"Invalid informative: {informative!r} (an integer in [1, features={features}])")
    if not 0 <= label_noise < 1:
        raise ValueError(f"Invalid label_noise: {label_noise!r} (a fraction in [0, 1))")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, features)).astype(np.float32)
    radius = np.linalg.norm(x[:, :informative], axis=1)
    # shell edges from a large reference draw, so the classes are balanced whatever n_train is
    reference = np.linalg.norm(np.random.default_rng(seed + 1).standard_normal((100_000, informative)), axis=1)
    edges = np.quantile(reference, np.linspace(0, 1, classes + 1)[1:-1])
    y = np.searchsorted(edges, radius).astype(np.int64)
    flip = rng.random(len(y)) < label_noise
    y[flip] = rng.integers(0, classes, int(flip.sum()))
    x = x[:, None, :]  # (N, channels=1, length=features): the layout tvlars takes for non-image data
    train_x, test_x = x[:n_train], x[n_train:]
    mean, std = float(train_x.mean()), float(train_x.std())
    return ArrayDataset(
        name="rings",
        train_x=train_x,
        train_y=y[:n_train],
        test_x=test_x,
        test_y=y[n_train:],
        classes=tuple(f"shell {i}" for i in range(classes)),
        mean=(mean,),
        std=(std,),
    )
