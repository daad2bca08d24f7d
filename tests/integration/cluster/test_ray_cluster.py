"""The two-node Ray cluster the scale-out tests run studies on (tests/utils/ray_cluster.py): a driver that joins
with ``RAY_ADDRESS`` schedules work on the second node through that node's custom resource, and removing the node
leaves it dead in the GCS while the head goes on.

The cluster lives in a host subprocess and the driver is a subprocess too: this pytest process may already hold
the session's local Ray (``ray_address`` fixture), and a process holds one Ray connection at most.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.ray_cluster import REPO, RayTestCluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

DRIVER = """
import json, os, ray
ray.init(address=os.environ["RAY_ADDRESS"], include_dashboard=False, log_to_driver=False)

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

on_node2 = ray.get([where.options(resources={"node2": 0.01}).remote() for _ in range(3)], timeout=120)
on_head = ray.get(where.options(resources={"head": 0.01}).remote(), timeout=120)
driver = ray.get_runtime_context().get_node_id()
print(json.dumps({"node2": on_node2, "head": on_head, "driver": driver, "cpus": ray.cluster_resources().get("CPU")}))
"""


def run_driver(address: str, script: str) -> dict:
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, f"driver failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def in_session(sid: int) -> set[int]:
    """Live (non-zombie) processes of session ``sid`` (the host starts one: everything Ray spawns inherits it)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.add(int(stat.parent.name))
    return found


def test_two_node_cluster_runs_tasks_on_the_second_node_and_survives_its_removal():
    cluster = RayTestCluster(head_cpus=1)
    with cluster:
        host_pid = cluster.proc.pid
        node2 = cluster.add_node("node2", num_cpus=1)
        head = cluster.node_ids["head"]
        assert node2 != head
        assert cluster.address != os.environ.get("RAY_ADDRESS"), "must not be the session's Ray"
        alive = {n["node_id"] for n in cluster.nodes() if n["alive"]}
        assert alive == {head, node2}
        # other Ray users on this machine (`ray.init()` looks in this file first) must not find this cluster
        machine_wide = Path("/tmp/ray/ray_current_cluster")
        assert not machine_wide.exists() or cluster.address not in machine_wide.read_text()

        ran = run_driver(cluster.address, DRIVER)
        assert set(ran["node2"]) == {node2}, "a task asking for the node2 resource ran elsewhere"
        assert ran["head"] == head
        # both nodes share the machine's IP: a driver must attach to the head, or removing node2 would kill it
        assert ran["driver"] == head
        assert ran["cpus"] == 2.0  # one logical CPU per node

        started = in_session(host_pid)
        assert len(started) > 3, f"expected the host, GCS and two raylets in its session: {started}"
        cluster.remove_node("node2")
        cluster.wait_dead(node2, timeout_s=60)
        state = {n["node_id"]: n["alive"] for n in cluster.nodes()}
        assert state == {head: True, node2: False}

        # the head goes on alone: work for it still runs, and nothing asks for the dead node
        again = run_driver(cluster.address, DRIVER.replace('resources={"node2": 0.01}', 'resources={"head": 0.01}'))
        assert set(again["node2"]) == {head} and again["cpus"] == 1.0
    # nothing left behind: the host and every process it started are gone
    assert cluster.proc is None
    leftovers = in_session(host_pid)
    assert not leftovers, f"processes left behind: {leftovers}"
