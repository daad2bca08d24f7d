"""A multi-node Ray cluster on this one machine for tests: a head plus nodes added and removed on demand.

Ray's ``ray.cluster_utils.Cluster`` starts every node's processes (GCS, raylets) from the process that calls it.
That process here is a dedicated host subprocess (``python -m tests.utils.ray_cluster``), driven over stdin/stdout
with one JSON line per command, never the pytest process: the test session's own local Ray (tests/conftest.py
``ray_address``, which sets ``RAY_ADDRESS``) stays untouched, and closing the host (or its death: Ray's reaper)
takes every node down with it.

    with RayTestCluster(head_cpus=1) as cluster:            # head with 1 logical CPU and resource {"head": 1}
        cluster.add_node("node2", num_cpus=1)               # resource {"node2": 1} pins work to it
        server = start_server(db_url, tmp_path, workers=1, RAY_ADDRESS=cluster.address)  # the service joins it
        ...
        cluster.remove_node("node2")                        # its processes are killed; GCS marks it dead
        cluster.nodes()                                     # [{"node_id", "alive", "resources", ...}, ...]

Every node has the machine's own IP (Ray's default node IP, not 127.0.0.1: ``ray.init`` rewrites a 127.0.0.1 address
to that IP, so a cluster bound to loopback would be unreachable for drivers); its ports are free ones Ray picks.
A driver on this machine attaches to the head's raylet (tests/integration/cluster/test_ray_cluster.py checks it), so
removing another node never takes the driver down. Ray's machine-wide ``/tmp/ray/ray_current_cluster`` is left alone
(Cluster would write it, and every ``ray.init()`` without an address would then join this cluster); each cluster keeps
its sessions and logs in a temporary folder of its own, deleted on close.

Each node gets a custom resource named after it (``{name: 1}``), so a task or trial can be pinned to a node with
``.options(resources={name: 0.01})``. Logical CPUs are what the test asks for (``num_cpus=1`` per node suits a
2-core machine); nothing checks them against the real cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HEAD = "head"


class RayClusterError(RuntimeError):
    """The cluster host answered an error, died or did not answer in time."""


class RayTestCluster:
    """Client of one cluster host subprocess. ``address`` is the GCS address to give drivers as ``RAY_ADDRESS``."""

    def __init__(self, head_cpus: int = 1, head_resources: dict[str, float] | None = None, timeout_s: float = 120):
        self.head_cpus = head_cpus
        self.head_resources = {HEAD: 1.0, **(head_resources or {})}
        self.timeout_s = timeout_s
        self.log = Path(tempfile.mkstemp(prefix="tvlars-ray-cluster-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.node_ids: dict[str, str] = {}  # name -> Ray node id (hex), nodes added and not removed

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> RayTestCluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}  # never the session's Ray
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.utils.ray_cluster"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: close() can take down anything left behind
        )
        answer = self._call({"op": "start", "num_cpus": self.head_cpus, "resources": self.head_resources})
        self.address = answer["address"]
        self.node_ids[HEAD] = answer["node_id"]
        return self

    def close(self) -> None:
        """Shut every node down and end the host; kills its process group if it does not end in time."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            if proc.poll() is None:
                proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                proc.stdin.flush()
                proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: the host and whatever it started
            except ProcessLookupError:
                pass
            proc.wait()
            self.node_ids.clear()

    def __enter__(self) -> RayTestCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- nodes ------------------------------------------------------------------------------------------------------

    def add_node(self, name: str, num_cpus: int = 1, resources: dict[str, float] | None = None) -> str:
        """Start a node with ``num_cpus`` logical CPUs and resources ``{name: 1, **resources}``; wait until it is
        alive; return its node id (hex)."""
        if name in self.node_ids:
            raise ValueError(f"a node named {name!r} exists")
        answer = self._call(
            {"op": "add", "name": name, "num_cpus": num_cpus, "resources": {name: 1.0, **(resources or {})}}
        )
        self.node_ids[name] = answer["node_id"]
        return answer["node_id"]

    def remove_node(self, name: str, graceful: bool = False) -> None:
        """Kill a (non-head) node's processes, as a lost machine would be (``graceful``: SIGTERM first)."""
        if name == HEAD:
            raise ValueError("the head cannot be removed (close() ends the cluster)")
        self._call({"op": "remove", "name": name, "graceful": graceful})
        self.node_ids.pop(name)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node the GCS knows, dead ones included: ``node_id``, ``alive``, ``resources`` (totals)."""
        return self._call({"op": "nodes"})["nodes"]

    def wait_dead(self, node_id: str, timeout_s: float = 60) -> None:
        """Wait until the GCS reports ``node_id`` dead."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = {n["node_id"]: n["alive"] for n in self.nodes()}
            if state.get(node_id) is False:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} still {'alive' if state.get(node_id) else 'unknown'}")
            time.sleep(0.5)

    # -- protocol -------------------------------------------------------------------------------------------------

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            raise RayClusterError(f"the cluster host is not running\n{self._tail()}")
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self._readline()
        if not line:
            raise RayClusterError(f"the cluster host died during {request['op']}\n{self._tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RayClusterError(f"{request['op']}: {answer['error']}\n{self._tail()}")
        return answer

    def _readline(self) -> str:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=self.timeout_s):
                raise RayClusterError(f"the cluster host did not answer in {self.timeout_s} s\n{self._tail()}")
        return self.proc.stdout.readline()

    def _tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# -- the host process -------------------------------------------------------------------------------------------


def _host() -> None:
    """Serve commands from stdin, one JSON line each, answering one JSON line each on stdout."""
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    # Cluster() writes its address to /tmp/ray/ray_current_cluster (and deletes that file on shutdown), where every
    # `ray.init()` without an address on this machine looks first: other test sessions would join this cluster, or
    # hang on it once it is gone. Keep the machine-wide file alone.
    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    ray._common.utils.reset_ray_address = lambda *args, **kwargs: None
    temp_dir = tempfile.mkdtemp(prefix="tvlars-rc-")  # sessions and logs of this cluster only (short: socket paths)
    out = sys.stdout
    sys.stdout = sys.stderr  # Ray's own prints must not corrupt the protocol
    cluster: Cluster | None = None
    nodes: dict[str, Any] = {}

    def node_table() -> list[dict[str, Any]]:
        return [
            {"node_id": n["NodeID"], "alive": bool(n["Alive"]), "resources": n.get("Resources", {})}
            for n in cluster.global_state.node_table()
        ]

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "start":
                cluster = Cluster(
                    initialize_head=True,
                    connect=False,
                    head_node_args={
                        "num_cpus": request["num_cpus"],
                        "resources": request["resources"],
                        "include_dashboard": False,
                        "temp_dir": temp_dir,
                    },
                )
                answer = {"address": cluster.address, "node_id": cluster.head_node.node_id}
            elif op == "add":
                node = cluster.add_node(num_cpus=request["num_cpus"], resources=request["resources"])
                cluster.wait_for_nodes()
                nodes[request["name"]] = node
                answer = {"node_id": node.node_id}
            elif op == "remove":
                cluster.remove_node(nodes.pop(request["name"]), allow_graceful=request["graceful"])
                answer = {}
            elif op == "nodes":
                answer = {"nodes": node_table()}
            elif op == "shutdown":
                break
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as e:  # answered, so the test sees it; the host keeps serving
            answer = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    if cluster is not None:
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    _host()
