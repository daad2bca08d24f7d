"""The example optimizer plugin (Lion, examples/optimizer-plugin) as users ship it: listed by GET /v1/workloads with
its distribution, options, defaults and ranges; compared against TVLARS through the real server; and an optimizer
plugin that fails at import listed under ``broken`` while the API lives on."""

from __future__ import annotations

import time

import pytest

from ..conftest import unique_name
from .test_registries import _run_json

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


LIST_AND_SUBMIT_BROKEN_OPTIMIZER = """
import json, tempfile
from fastapi.testclient import TestClient
from service.core.config import Settings
from service.main import create_app

db = tempfile.mkdtemp() + "/api.db"
# no API keys: the app answers loopback only, so the client calls 127.0.0.1 (not "testserver")
with TestClient(create_app(Settings(database_url="sqlite:///" + db)), base_url="http://127.0.0.1") as c:
    listed = c.get("/v1/workloads")
    spec = {"name": "s", "workload": {"dataset": "digits", "model": "mlp", "epochs": 1, "batch_size": 8},
            "optimizer": "broken_opt", "search_space": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}}
    broken = c.post("/v1/studies", json=spec)
    spec["optimizer"] = "sgd"
    fine = c.post("/v1/studies", json=spec)
print(json.dumps({"status": listed.status_code, "listed": listed.json(), "broken": [broken.status_code, broken.text],
                  "fine": fine.status_code}))
"""


def test_an_optimizer_plugin_that_fails_at_import_is_listed_as_broken_and_refused(fixture_plugins):
    out = _run_json(fixture_plugins, LIST_AND_SUBMIT_BROKEN_OPTIMIZER)
    assert out["status"] == 200  # a broken optimizer plugin never takes the API down
    broken = {(b["kind"], b["name"]): b for b in out["listed"]["broken"]}
    assert broken["optimizer", "broken_opt"]["source"] == "tvlars-test-broken 1.2.3"
    assert (
        "optimizer 'broken_opt' from tvlars-test-broken 1.2.3 (tvlars_test_broken:SPEC) failed to load: "
        "ModuleNotFoundError"
    ) in broken["optimizer", "broken_opt"]["error"]
    assert "broken_opt" not in {o["name"] for o in out["listed"]["optimizers"]}
    status, body = out["broken"]
    assert status == 422 and "failed to load" in body
    assert out["fine"] == 201  # the other optimizers still work
