"""Bodies a careless or hostile client sends, each answered with a clear 4xx before any work is done (issue 26):
numbers past any useful bound, NaN/Infinity, grids too large to build, workloads too large to hold, derived studies
that would be refused later, bodies too deep or too large. None is a 500, and none is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from search_spaces import merge
from service.api.limits import MAX_JSON_DEPTH, json_depth
from service.testing.specs import quick_spec
from tests.unit.service.api.test_comparisons import SMALL


def _study(**overrides: Any) -> dict[str, Any]:
    return quick_spec("bad", **overrides)


def _grid(space: dict[str, Any]) -> dict[str, Any]:
    body = _study(sampler={"name": "grid"}, scheduler={"name": "none"})
    body["search_space"] = space
    body["fixed"] = {k: v for k, v in body["fixed"].items() if k not in space}
    body["budget"] = {"max_concurrent": 1}
    return body


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


# (id, path, body, status, where the error points, a phrase the message holds)
STUDY_CASES = [
    (
        "grid over an int range 1..1e7",
        _grid({"delay_epochs": {"type": "int", "low": 1, "high": 10_000_000}}),
        422,
        ["body"],
        "the grid has 10000000 points: at most 10000",
    ),
    (
        "grid over an int range to 1e12 (was a MemoryError)",
        _grid({"delay_epochs": {"type": "int", "low": 1, "high": 10**12}}),
        422,
        ["body", "search_space", "delay_epochs", "int", "high"],
        "less than or equal to 2147483647",
    ),
    (
        "grid over an int range to 1e21 (was an OverflowError)",
        _grid({"delay_epochs": {"type": "int", "low": 1, "high": 10**21}}),
        422,
        ["body", "search_space", "delay_epochs", "int", "high"],
        "",
    ),
    (
        "grid of 10^4 x 10^4 points, each range small",
        _grid(
            {
                "delay_epochs": {"type": "int", "low": 0, "high": 9_999},
                "warmup_epochs": {"type": "int", "low": 0, "high": 9_999},
            }
        ),
        422,
        ["body"],
        "the grid has 100000000 points",
    ),
    (
        "grid over a float range with a tiny step",
        _grid({"momentum": {"type": "float", "low": 0.0, "high": 0.9, "step": 1e-300}}),
        422,
        ["body"],
        "at most 10000",
    ),
    ("seed 1e30", _study(seed=10**30), 422, ["body", "seed"], "less than or equal to 2147483647"),
    ("seed + trial number past 2^31-1", _study(seed=2**31 - 2), 422, ["body"], "seed (2147483646) + trial number"),
    ("sampler.seed -1", _study(sampler={"name": "random", "seed": -1}), 422, ["body", "sampler", "seed"], ""),
    ("sampler.seed 2^31", _study(sampler={"name": "random", "seed": 2**31}), 422, ["body", "sampler", "seed"], ""),
    (
        "TPE n_ei_candidates 1e9",
        _study(sampler={"name": "tpe", "options": {"n_ei_candidates": 10**9}}),
        422,
        ["body", "sampler"],
        "option 'n_ei_candidates': Input should be less than or equal to 10000",
    ),
    (
        "TPE n_startup_trials -5",
        _study(sampler={"name": "tpe", "options": {"n_startup_trials": -5}}),
        422,
        ["body", "sampler"],
        "option 'n_startup_trials': Input should be greater than or equal to 0",
    ),
    (
        "NSGA-II crossover_prob 2",
        _study(objective=[{"metric": "val_acc"}], sampler={"name": "nsga2", "options": {"crossover_prob": 2.0}}),
        422,
        ["body", "sampler"],
        "option 'crossover_prob'",
    ),
    (
        "scheduler.reduction_factor 1e9",
        _study(scheduler={"name": "asha", "reduction_factor": 1e9}),
        422,
        ["body", "scheduler", "reduction_factor"],
        "",
    ),
    (
        "dataset_options.num_samples 1e10",
        _study(workload={"dataset_options": {"num_samples": 10**10}}),
        422,
        ["body"],
        "Invalid num_samples: 10000000000 (a number >= 10, <= 1000000)",
    ),
    (
        "model_options.hidden [1e6] x 100",
        _study(workload={"model_options": {"hidden": [10**6] * 100}}),
        422,
        ["body"],
        "Invalid hidden: 100 items (at most 64)",
    ),
    (
        "model_options.hidden [65536] x 64: within bounds, needs terabytes",
        _study(workload={"model_options": {"hidden": [65_536] * 64}}),
        422,
        ["body", "workload"],
        "needs about",
    ),
    (
        "eval_batch_size 1e12",
        _study(fixed={"weight_decay": 5e-4, "momentum": 0.9, "eval_batch_size": 10**12}),
        422,
        ["body"],
        "Invalid eval_batch_size",
    ),
    (
        "searched eval_batch_size up to 1e9 (the upper corner is checked too)",
        _study(search_space={"eval_batch_size": {"type": "int", "low": 1, "high": 10**9, "log": True}}),
        422,
        ["body"],
        "the trial config at the top of the search space is invalid: Invalid eval_batch_size",
    ),
    (
        "an int range past 2^31-1",
        _study(search_space={"delay_epochs": {"type": "int", "low": 0, "high": 2**40}}),
        422,
        ["body", "search_space", "delay_epochs", "int", "high"],
        "",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "loc", "message"),
    [pytest.param(body, status, loc, msg, id=name) for name, body, status, loc, msg in STUDY_CASES],
)
def test_a_bad_study_body_is_a_clear_4xx_and_stores_nothing(client, body, status, loc, message):
    r = client.post("/v1/studies", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"][: len(loc)] == loc, detail
    assert message in detail[0]["msg"], detail
    assert client.get("/v1/studies").json()["total"] == 0


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        pytest.param('"momentum": NaN', ["body", "fixed", "momentum"], id="NaN in fixed"),
        pytest.param('"momentum": Infinity', ["body", "fixed", "momentum"], id="Infinity in fixed"),
        pytest.param('"momentum": -Infinity', ["body", "fixed", "momentum"], id="-Infinity in fixed"),
        pytest.param('"lam_steps": [1.0, NaN]', ["body", "fixed", "lam_steps", 1], id="NaN in a list"),
    ],
)
def test_nan_and_infinity_anywhere_are_422_naming_the_field(client, raw, loc):
    """Python's JSON parser reads NaN/Infinity; PostgreSQL's JSON column refuses them (it was a 500 at insert)."""
    body = json.dumps(_study()).replace('"momentum": 0.9', raw)
    assert raw in body
    r = client.post("/v1/studies", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc
    assert "NaN and ±Infinity" in r.json()["detail"][0]["msg"]


def test_nan_in_a_comparison_is_422_naming_the_field(client):
    body = json.dumps({**SMALL, "target_val_acc": 0.5}).replace("0.5", "NaN")
    r = client.post("/v1/comparisons", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "target_val_acc"]


def test_a_list_nested_700_deep_is_422_before_parsing(client):
    """It was a RecursionError (a 500) in a deepcopy of ``fixed``."""
    body = _study()
    body["fixed"]["deep"] = json.loads("[" * 700 + "]" * 700)
    r = client.post("/v1/studies", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert f"nested deeper than {MAX_JSON_DEPTH}" in r.json()["detail"]


def test_json_depth_counts_brackets_outside_strings_only():
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth(b'"\\"[["') == 0
    assert json_depth(b"[" * 40 + b"]" * 40) == 40
    assert json_depth(b"") == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_whether_declared_or_chunked(client, settings, chunked):
    """The README promises 413 over max_body_bytes; a chunked body got 400 (FastAPI's parser swallowed the error)."""
    body = _study(description="x" * 1_000)
    body["enqueue"] = [{"lr": 1.0}] * (settings.max_body_bytes // 10)
    data = json.dumps(body).encode()
    assert len(data) > settings.max_body_bytes
    content = iter([data[i : i + 4096] for i in range(0, len(data), 4096)]) if chunked else data
    r = client.post("/v1/studies", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert str(settings.max_body_bytes) in r.json()["detail"]


def test_a_chunked_body_within_the_limit_is_read_whole(client):
    data = json.dumps(_study()).encode()
    r = client.post("/v1/studies", content=iter([data[:100], data[100:]]), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def test_the_memory_limit_is_configurable_and_says_how_much_a_trial_needs(settings, tmp_path):
    from fastapi.testclient import TestClient

    from service.core.db import dispose
    from service.main import create_app
    from tests.unit.service.api.conftest import AUTH

    small = settings.model_copy(update={"max_trial_gb": 0.001})  # 1 MiB: the quick MNIST-1D MLP needs more
    with TestClient(create_app(small), headers=AUTH) as c:
        r = c.post("/v1/studies", json=_study())
        assert r.status_code == 422, r.text
        msg = r.json()["detail"][0]["msg"]
        assert "needs about" in msg and "parameters" in msg and "TVLARS_MAX_TRIAL_GB (0.001 GiB)" in msg
    dispose(small.database_url)


COMPARISON_CASES = [
    (
        "budget.extension_epochs 1e12 (no longer used: an extension spends a tuning study's budget)",
        merge(SMALL, {"budget": {"extension_epochs": 10**12}, "range_check": "extend"}),
        ["body", "budget"],
        "extension_epochs is no longer used",
    ),
    (
        "an extension study that would be invalid (momentum's log range widened past 1)",
        merge(
            SMALL,
            {
                "arms": [
                    {"optimizer": "tvlars"},
                    {
                        "optimizer": "lars",
                        "search_space": {"momentum": {"type": "float", "low": 0.5, "high": 0.99, "log": True}},
                        "fixed": {"weight_decay": 5e-4},
                    },
                ],
                "primary": ["lars"],
                "range_check": "extend",
            },
        ),
        ["body"],
        "range-check extension 1 (ranges widened at their high end) would be invalid",
    ),
    ("sampler.seed -1", merge(SMALL, {"sampler": {"seed": -1}}), ["body", "sampler", "seed"], ""),
    (
        "sampler options out of bounds",
        merge(SMALL, {"sampler": {"name": "tpe", "options": {"n_ei_candidates": 10**9}}}),
        ["body"],
        "n_ei_candidates",
    ),
]


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [pytest.param(body, loc, msg, id=name) for name, body, loc, msg in COMPARISON_CASES],
)
def test_a_bad_comparison_body_is_422_and_stores_nothing(client, body, loc, message):
    r = client.post("/v1/comparisons", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"][: len(loc)] == loc, detail
    assert message in detail[0]["msg"], detail
    assert client.get("/v1/comparisons").json()["total"] == 0
