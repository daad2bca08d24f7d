"""A study through the service on a two-node Ray cluster (tests/utils/ray_cluster.py): trials run on both nodes,
each records where it ran; the second node is removed mid-study and its trial continues on the head from its
checkpoint, and the study finishes with nothing lost.

The cluster lives in a host subprocess and the service is a subprocess pointed at it with ``RAY_ADDRESS``: this
pytest process may hold the session's own local Ray (``ray_address`` fixture), which must stay out of it.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from service.testing.server import start_server, wait_state
from service.testing.specs import quick_spec
from tests.conftest import unique_name
from tests.utils.ray_cluster import RayTestCluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

EPOCHS = 30


def test_study_runs_on_two_nodes_and_survives_losing_one(pg_url, tmp_path):
    spec = quick_spec(
        unique_name("cluster"),
        scheduler={"name": "none"},
        budget={"n_trials": 3, "max_concurrent": 2},
        workload={"epochs": EPOCHS, "batch_size": 250},
    )
    # one storage for the polling below: a storage per poll opens a connection pool each time and exhausts
    # PostgreSQL's max_connections within the test's minutes
    storage = optuna.storages.RDBStorage(pg_url)
    with RayTestCluster(head_cpus=1) as cluster:
        head = cluster.node_ids["head"]
        node2 = cluster.add_node("node2", num_cpus=1)
        server = start_server(
            pg_url, tmp_path, workers=1, RAY_ADDRESS=cluster.address, TVLARS_CHECKPOINT_PATH=str(tmp_path / "ckpt")
        )
        try:
            with server.client() as c:
                r = c.post("/v1/studies", json=spec)
                assert r.status_code == 201, r.text
                study_id = r.json()["id"]
                seen: dict[int, set[str]] = {}  # trial number -> nodes it was seen running on
                moved = None
                deadline = time.monotonic() + 180
                while moved is None:
                    assert time.monotonic() < deadline, (
                        f"no checkpointed trial on node2 in time: {seen} (head {head}, node2 {node2})"
                    )
                    try:
                        study = optuna.load_study(study_name=spec["name"], storage=storage)
                    except KeyError:
                        time.sleep(0.3)
                        continue
                    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                        node = t.user_attrs.get("node_id")
                        if node:
                            seen.setdefault(t.number, set()).add(node)
                        saved = (t.user_attrs.get("checkpoint") or {}).get("epoch") or 0
                        if node == node2 and 2 <= saved < EPOCHS - 3 and head in set().union(*seen.values()):
                            moved = t
                    time.sleep(0.2)
                # both nodes ran trials at the same time; now the second machine is lost mid-trial
                cluster.remove_node("node2")
                cluster.wait_dead(node2, timeout_s=60)
                final = wait_state(c, study_id, ("SUCCEEDED", "FAILED", "CANCELLED"), timeout_s=300)
        finally:
            server.stop()
    assert final["state"] == "SUCCEEDED", final
    study = optuna.load_study(study_name=spec["name"], storage=storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # nothing failed, nothing replaced
    continued = study.trials[moved.number]
    assert continued.user_attrs["node_id"] == head  # the last node it ran on
    assert continued.user_attrs["resumed_from_epoch"] >= moved.user_attrs["checkpoint"]["epoch"]
    assert continued.user_attrs["curves"]["epoch"] == list(range(1, EPOCHS + 1))
    assert sorted(continued.intermediate_values) == list(range(1, EPOCHS + 1))
    assert all(t.user_attrs["hostname"] for t in trials)
    assert {t.user_attrs["node_id"] for t in trials} <= {head, node2}
    storage.engine.dispose()
