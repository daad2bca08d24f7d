"""GET /v1/workloads, and the 422s a spec naming workloads gets: unknown names, code references, dead dimensions,
unknown plugin options. The example plugin (examples/workload-plugin) is installed in this venv, as make install
leaves it."""

from __future__ import annotations

import pytest

from service.testing.specs import quick_spec
from tests.utils.plugins import ensure_example_plugin

EXAMPLE = "tvlars-example-workloads 0.1.0"


@pytest.fixture(scope="module", autouse=True)
def example_plugin() -> None:
    ensure_example_plugin()


def test_workloads_lists_built_ins_and_the_installed_plugin_with_options_and_sources(client):
    r = client.get("/v1/workloads")
    assert r.status_code == 200, r.text
    body = r.json()
    datasets = {d["name"]: d for d in body["datasets"]}
    models = {m["name"]: m for m in body["models"]}
    assert datasets["mnist1d"]["source"] == "built-in" and datasets["mnist1d"]["options"] == {
        "num_samples": 5000,
        "seed": 42,
    }
    assert datasets["rings"]["source"] == EXAMPLE
    assert datasets["rings"]["options"]["features"] == 16 and datasets["rings"]["required"] == []
    assert models["resmlp"]["source"] == EXAMPLE and models["resmlp"]["options"] == {
        "width": 64,
        "depth": 2,
        "dropout": 0.0,
    }
    assert models["resnet18"]["options"] == {"stem": "cifar"} and models["mlp"]["options"] == {"hidden": [256, 256]}
    tasks = {t["name"]: t for t in body["tasks"]}
    assert set(tasks) >= {"classification", "barlow_twins"} and "probe_lr" in tasks["barlow_twins"]["options"]
    optimizers = {o["name"]: o for o in body["optimizers"]}
    assert "lam" in optimizers["tvlars"]["trial_keys"] and "lam" not in optimizers["lars"]["trial_keys"]
    assert "momentum" not in optimizers["lamb"]["trial_keys"] and "trust_ratio" in optimizers["lamb"]["trial_keys"]
    assert optimizers["lars_warmup"]["optimizer"] == "LARS" and optimizers["lars_warmup"]["recipe"] == {
        "lr_scaling": "linear_256",
        "warmup_fraction": 0.2,
        "lr_schedule": "warmup_cosine",
    }
    assert optimizers["tvlars"]["recipe"] is None and optimizers["tvlars"]["hyperparameters"]["lam"] == 1e-3
    assert body["broken"] == []


def test_a_spec_on_the_plugin_workload_is_accepted(client):
    workload = {"dataset": "rings", "model": "resmlp", "dataset_options": {"classes": 3}, "model_options": {"depth": 1}}
    spec = quick_spec("rings-ok", workload=workload)
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 201, r.text


def _errors(response) -> str:
    assert response.status_code == 422, response.text
    return " | ".join(str(e["msg"]) for e in response.json()["detail"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"workload": {"dataset": "imagenet"}}, r"unknown dataset 'imagenet' is not installed on host .*rings"),
        ({"workload": {"model": "vit"}}, r"unknown model 'vit' is not installed on host .*\(installed: cnn, mlp, res"),
        ({"workload": {"task": "mae"}}, r"unknown task 'mae' is not installed on host \S+ \(installed: barlow_twins"),
        ({"workload": {"dataset": "os:system"}}, r"dataset 'os:system' looks like a code reference: .* nothing in a"),
        (
            {"workload": {"model": "tvlars_example_workloads.resmlp:build"}},
            r"model 'tvlars_example_workloads.resmlp:build' looks like a code reference",
        ),
        ({"workload": {"task": "builtins:eval"}}, r"task 'builtins:eval' looks like a code reference"),
        ({"optimizer": "torch.optim:SGD"}, r"optimizer 'torch.optim:SGD' looks like a code reference"),
    ],
)
def test_names_must_be_registered_and_are_never_code(client, overrides, message):
    import re

    errors = _errors(client.post("/v1/studies", json=quick_spec("bad-name", **overrides)))
    assert re.search(message, errors), errors


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # searched: lam with LARS (TVLARS's λ) would be a dead dimension of the search
        ({"optimizer": "lars"}, "search_space.lam would be ignored: optimizer 'lars' does not take it (optimizers "),
        (
            {"optimizer": "lamb"},
            "fixed.momentum would be ignored: optimizer 'lamb' does not take it (optimizers that take it: lars, ",
        ),
        (
            {"fixed": {"probe_lr": 0.1}},
            "fixed.probe_lr would be ignored: task 'classification' does not read it (tasks that do: barlow_twins)",
        ),
        (
            {"workload": {"stem": "imagenet"}},
            "workload.stem would be ignored: model 'mlp' has no option 'stem' (models that do: resnet18, ",
        ),
    ],
)
def test_dead_dimensions_are_422_naming_the_key_and_what_takes_it(client, overrides, message):
    errors = _errors(client.post("/v1/studies", json=quick_spec("dead", **overrides)))
    assert message in errors, errors


def test_unknown_options_of_a_plugin_are_422_listing_what_it_takes(client):
    spec = quick_spec("opts", workload={"dataset": "rings", "model": "resmlp", "model_options": {"depht": 3}})
    errors = _errors(client.post("/v1/studies", json=spec))
    assert "Unknown option(s) for model 'resmlp': depht (accepted: width=64, depth=2, dropout=0.0)" in errors
    spec = quick_spec("opts", workload={"dataset": "rings", "model": "resmlp", "dataset_options": {"rows": 3}})
    errors = _errors(client.post("/v1/studies", json=spec))
    assert "Unknown option(s) for dataset 'rings': rows (accepted: n_train=4000, " in errors
