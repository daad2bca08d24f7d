"""Plugins as users ship them: installed distributions read through their entry points, in fresh interpreters.

The fixture distributions (packages/ beside this file) sit in a ``--target`` folder that only these subprocesses see:
tvlars-test-broken (its import fails), tvlars-test-clash-a and -b (both claim the model ``twin``; -a also claims the
built-in dataset ``mnist1d``; -b adds a task ``echo``).
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.utils.plugins import python_with

LIST_AND_SUBMIT = """
import json, tempfile
from fastapi.testclient import TestClient
from service.core.config import Settings
from service.main import create_app

db = tempfile.mkdtemp() + "/api.db"
# no API keys: the app answers loopback only, so the client calls 127.0.0.1 (not "testserver")
with TestClient(create_app(Settings(database_url="sqlite:///" + db)), base_url="http://127.0.0.1") as c:
    listed = c.get("/v1/workloads")
    spec = {"name": "s", "workload": {"dataset": "broken_data", "model": "mlp", "epochs": 1, "batch_size": 8},
            "search_space": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}}
    broken = c.post("/v1/studies", json=spec)
    spec["workload"].update(dataset="digits", model="twin")
    twin = c.post("/v1/studies", json=spec)
print(json.dumps({"status": listed.status_code, "listed": listed.json(), "broken": [broken.status_code, broken.text],
                  "twin": [twin.status_code, twin.text]}))
"""


def _run_json(path, code: str) -> dict:
    done = python_with(path, code)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_broken_and_clashing_plugins_are_listed_with_their_errors_and_refused_as_422(fixture_plugins):
    out = _run_json(fixture_plugins, LIST_AND_SUBMIT)
    assert out["status"] == 200  # a broken plugin never takes the API down
    broken = {(b["kind"], b["name"]): b for b in out["listed"]["broken"]}
    assert broken["dataset", "broken_data"]["source"] == "tvlars-test-broken 1.2.3"
    assert (
        "dataset 'broken_data' from tvlars-test-broken 1.2.3 (tvlars_test_broken:load) failed to load: "
        "ModuleNotFoundError: No module named 'tvlars_test_a_module_that_is_not_installed'"
    ) in broken["dataset", "broken_data"]["error"]
    assert broken["model", "twin"]["error"] == (
        "model 'twin' is provided by both tvlars-test-clash-a 0.1.0 and tvlars-test-clash-b 0.2.0: uninstall one"
    )
    assert "by tvlars (built-in) and by tvlars-test-clash-a 0.1.0" in broken["dataset", "mnist1d"]["error"]
    # the working ones are still listed, with where they come from
    datasets = {d["name"]: d["source"] for d in out["listed"]["datasets"]}
    assert datasets["digits"] == "built-in" and "broken_data" not in datasets and "mnist1d" not in datasets
    assert {t["name"]: t["source"] for t in out["listed"]["tasks"]}["echo"] == "tvlars-test-clash-b 0.2.0"
    status, body = out["broken"]
    assert status == 422 and "No module named 'tvlars_test_a_module_that_is_not_installed'" in body
    status, body = out["twin"]
    assert status == 422 and "provided by both tvlars-test-clash-a 0.1.0 and tvlars-test-clash-b 0.2.0" in body


def test_a_plugin_task_trains_through_run(fixture_plugins):
    code = """
import json
from tvlars.train import run
r = run({"task": "echo", "dataset": "digits", "model": "mlp", "epochs": 2, "batch_size": 256, "lr": 0.5,
         "optimizer": "lars", "num_threads": 1})
print(json.dumps({"acc": r["test_acc"], "epochs": r["epochs_run"]}))
"""
    out = _run_json(fixture_plugins, code)
    assert out["epochs"] == 2 and out["acc"] > 0.3  # 10 classes: well above chance


def test_a_workload_missing_on_a_host_names_the_host_and_what_to_install(fixture_plugins):
    # a trainer on a host without the plugin (no fixture folder on its path) gets the study's dataset name
    code = """
from tvlars.train import run
try:
    run({"dataset": "broken_data", "model": "mlp", "epochs": 1})
except ValueError as e:
    print(e)
"""
    done = python_with(None, code)
    message = done.stdout.strip()
    assert message.startswith(f"dataset 'broken_data' is not installed on host {socket.gethostname()} (installed: ")
    assert "pip install the package that provides it, with an entry point in group 'tvlars.datasets'" in message


def test_registering_in_code_refuses_a_taken_name_and_adds_a_new_one():
    code = """
import json
import numpy as np
import tvlars
from tvlars.data import ArrayDataset, load_dataset
from tvlars.registry import PluginError

def load(data_dir, *, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 4)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64)
    return ArrayDataset("sign", x, y, x[:16], y[:16], ("neg", "pos"), (0.0,), (1.0,))

try:
    tvlars.register_dataset("digits", load)
except PluginError as e:
    clash = str(e)
tvlars.register_dataset("sign", load)
print(json.dumps({"clash": clash, "n": len(load_dataset("sign", n=32).train_y)}))
"""
    out = _run_json(None, code)
    assert out["clash"] == (
        "dataset 'digits' is registered twice: by tvlars (built-in) and by __main__ (registered in code) "
        "(uninstall one, or register under another name)"
    )
    assert out["n"] == 32


def test_a_worker_without_the_plugin_refuses_the_study_at_claim_naming_its_host(sqlite_url):
    # what the API accepted where the plugin is installed, a worker here (without it) re-validates before any trial
    from service.engine import run_study
    from service.errors import InvalidSpecError
    from service.testing.specs import quick_spec

    spec = quick_spec("elsewhere", workload={"dataset": "broken_data"})
    with pytest.raises(InvalidSpecError) as info:
        run_study(spec, sqlite_url)
    message = str(info.value)
    assert f"unknown dataset 'broken_data' is not installed on host {socket.gethostname()} (installed: " in message
    assert "pip install the package that provides it" in message
