"""An optimizer plugin that fails at import, listed under ``broken`` while the API lives on (the example optimizer
plugin, Lion, listed and compared against TVLARS through the real server: tests/integration/service/plugins/)."""

from __future__ import annotations

from tests.unit.service.plugins.test_registries import _run_json

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
