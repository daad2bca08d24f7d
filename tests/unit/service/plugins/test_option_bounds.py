"""Workload options declared with bounds in the callable's signature (issue 26): the registry checks values against
them, for a plugin as for the built-ins, and the API lists them."""

from __future__ import annotations

from typing import Annotated

import pytest

from tvlars.data import DATASETS
from tvlars.models import MODELS
from tvlars.registry import Bounds, Registry


def test_a_plugins_declared_bounds_are_checked_by_value():
    registry = Registry("model", "tvlars.test-bounds", leading=2)

    def build(input_shape, num_classes, *, width: Annotated[int, Bounds(ge=1, le=64)] = 8, act: str = "relu"):
        """A plugin model."""

    entry = registry.register("bounded", build, source="a-plugin 1.0")
    assert entry.bounds == {"width": Bounds(ge=1, le=64)}
    registry.check_options("bounded", {"width": 64, "act": "gelu"})
    with pytest.raises(ValueError, match=r"model 'bounded': Invalid width: 65 \(a number >= 1, <= 64\)"):
        registry.check_options("bounded", {"width": 65})
    with pytest.raises(ValueError, match="Invalid width: nan"):
        registry.check_options("bounded", {"width": float("nan")})


@pytest.mark.parametrize(
    ("registry", "name", "options", "message"),
    [
        (DATASETS, "mnist1d", {"num_samples": 10**10}, "Invalid num_samples"),
        (DATASETS, "synthetic", {"image_size": 100_000}, "Invalid image_size"),
        (DATASETS, "mnist1d", {"seed": -1}, "Invalid seed"),
        (MODELS, "mlp", {"hidden": [10**6]}, r"Invalid hidden\[0\]"),
        (MODELS, "mlp", {"hidden": [8] * 65}, "Invalid hidden: 65 items"),
        (MODELS, "cnn", {"width": 10**6}, "Invalid width"),
    ],
)
def test_built_in_options_are_bounded(registry, name, options, message):
    with pytest.raises(ValueError, match=message):
        registry.check_options(name, options)


def test_the_workloads_listing_shows_the_bounds():
    from fastapi.testclient import TestClient

    from service.core.config import Settings
    from service.main import create_app

    # no API keys: the app answers loopback only, so the client calls 127.0.0.1 (not "testserver")
    with TestClient(create_app(Settings(database_url="sqlite://")), base_url="http://127.0.0.1") as c:
        listing = c.get("/v1/workloads").json()
    mnist1d = next(d for d in listing["datasets"] if d["name"] == "mnist1d")
    assert mnist1d["bounds"]["num_samples"] == {"ge": 10, "le": 1_000_000}
    mlp = next(m for m in listing["models"] if m["name"] == "mlp")
    assert mlp["bounds"]["hidden"] == {"ge": 1, "le": 65_536, "max_length": 64}
