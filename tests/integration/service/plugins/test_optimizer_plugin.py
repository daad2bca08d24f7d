"""The example optimizer plugin (Lion, examples/optimizer-plugin) as users ship it: listed by GET /v1/workloads with
its distribution, options, defaults and ranges; compared against TVLARS through the real server (an optimizer plugin
that fails at import: tests/unit/service/plugins/test_optimizer_plugin.py)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import unique_name

EXAMPLE_OPTIMIZER = "tvlars-example-optimizers 0.1.0"

#: Lion against TVLARS on MNIST-1D: one batch size, one tuning repeat of one 2-epoch trial per arm, one re-run seed.
LION_VS_TVLARS = {
    "workload": {"dataset": "mnist1d", "model": "mlp", "epochs": 2, "dataset_options": {"num_samples": 2000}},
    "arms": [{"optimizer": "tvlars"}, {"optimizer": "lion"}],
    "batch_sizes": [512],
    "budget": {"epochs": 2, "max_failed": 0},
    "tuning_repeats": 1,
    "range_check": "flag",
    "rerun": {"top_k": 1, "seeds": 1},
}


def test_the_plugin_optimizer_is_listed_with_its_source_options_defaults_and_ranges(server):
    with server.client() as c:
        body = c.get("/v1/workloads").json()
    optimizers = {o["name"]: o for o in body["optimizers"]}
    lion = optimizers["lion"]
    assert lion["source"] == EXAMPLE_OPTIMIZER and lion["optimizer"] == "Lion"
    assert lion["trial_keys"] == ["lr", "weight_decay", "beta1", "beta2"]
    assert lion["hyperparameters"] == {"lr": 1e-4, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.99}
    assert lion["options"]["beta2"]["argument"] == "betas" and lion["options"]["beta2"]["bounds"] == {"ge": 0, "lt": 1}
    assert lion["references"] == {"256": {"lr": pytest.approx(3.10723e-4, rel=1e-5)}} and lion["recipe"] is None
    tvlars = optimizers["tvlars"]
    assert tvlars["source"] == "built-in" and tvlars["contains"] == ["lars"]
    assert tvlars["options"]["lam_steps"]["search"] == {"low": 0.05, "high": 50.0, "log": True}
    assert tvlars["options"]["delay_fraction"]["bounds"] == {"ge": 0, "le": 1}
    assert optimizers["lars_warmup"]["recipe"]["warmup_fraction"] == 0.2
    assert body["broken"] == []


@pytest.mark.timeout(180)
def test_a_comparison_of_the_plugin_against_tvlars_runs_through_the_server(server):
    started = time.monotonic()
    with server.client() as c:
        r = c.post("/v1/comparisons", json={**LION_VS_TVLARS, "name": unique_name("lion")})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 150
        while (cmp := c.get(f"/v1/comparisons/{r.json()['id']}").json())["state"] not in ("SUCCEEDED", "FAILED"):
            assert time.monotonic() < deadline, cmp
            time.sleep(0.5)
        assert cmp["state"] == "SUCCEEDED", cmp.get("error")
        arms = {a["optimizer"]: a for a in cmp["arms"]}
        assert set(arms) == {"tvlars", "lion"} and arms["lion"]["epochs_spent"] == 2
        assert 0.0 <= arms["lion"]["rerun"]["mean"] <= 1.0
        # Lion started from its reference point: the centre of its LR range at batch 512
        studies = c.get("/v1/studies", params={"limit": 100}).json()["items"]
        lion_tune = next(s for s in studies if s["id"] in arms["lion"]["studies"] and s["spec"]["enqueue"])
        lr = lion_tune["spec"]["search_space"]["lr"]
        assert lion_tune["spec"]["enqueue"] == [{"lr": pytest.approx((lr["low"] * lr["high"]) ** 0.5, rel=1e-4)}]
        assert c.get(f"/v1/comparisons/{cmp['id']}/report").status_code == 200  # the report draws Lion's schedule
    print(f"lion vs tvlars comparison: {time.monotonic() - started:.1f} s")
