"""Soak: the service under combined faults for an hour (``--quick``: under 3 minutes), then every invariant checked
from storage.

What runs: a private PostgreSQL (``initdb`` in a temp folder, :class:`service.testing.pg.PrivatePostgres`; never the
shared server), one local Ray (a small holder process, so that every worker joins the same cluster through
``RAY_ADDRESS``), the API (``tvlars-tune serve --workers 0``) and ``--workers`` worker processes
(``tvlars-tune worker``), each of which may be killed, paused or restarted on its own. Heartbeats, staleness and the
lease TTL are short (``TVLARS_WORKER_STALE_S`` = ``TVLARS_LEASE_TTL_S`` = 4 s), so a pause longer than the lease
takes seconds.

What happens, for ``--minutes`` (default 60):

- **clients** through the real server's REST API (httpx, a write key): one submits tiny studies (MNIST-1D MLP,
  batch 1000, 2-3 epochs, 2-3 trials, one at a time, scheduler ``none`` or now and then ``asha``) whenever none
  waits in the queue and fewer than ``--workers`` run; one keeps one tiny comparison (2 arms, 1 batch size, 1 trial
  per tuning study, 2 re-run seeds) in flight; one issues random cancels and resumes (of studies and comparisons,
  and cancel → resume → cancel bursts); one reads (study list, a study, a comparison). Every response's status is
  logged by route; every exception in a client (a timeout, a dropped connection) is counted, never swallowed;
- **faults**, from one schedule: every ``--kill-every`` seconds (120) a worker (one driving a study, if any) is
  killed with SIGKILL and restarted; every ``--pg-every`` seconds (600) PostgreSQL is stopped for ``--outage-s``
  (5 s) and started again (``fast`` and ``immediate`` shutdowns in turn); once, a worker driving a study is
  SIGSTOPped for longer than ``TVLARS_WORKER_STALE_S`` + the lease TTL, then SIGCONTed.

Then the **drain**: clients stop, paused workers are resumed, dead ones restarted, and the soak waits up to
``--drain-s`` for every study and comparison to end. The invariants, each read from the private PostgreSQL (the
service's tables and Optuna's), not from what the clients believe:

1. ``all_terminal``: every study and comparison is SUCCEEDED, FAILED or CANCELLED, and every accepted submit (201)
   is stored (what is not is listed);
2. ``cancels_honoured``: every target (study or comparison) whose last accepted (202) action was a cancel ended
   CANCELLED, or, a study, ended SUCCEEDED or FAILED with no trial of it asked for or told after the cancel took
   effect: :data:`CANCEL_GRACE_S` after the 202 (the worker learns of a cancel at its next heartbeat and stops
   within a poll), or that long after the end of an outage that began within that grace. A comparison's cancel
   holds each of its studies to the same rule. ``resumes_honoured``: a target whose last accepted action was a
   resume did not end CANCELLED, nor a comparison FAILED for a CANCELLED study (a withdrawn cancel must not stop
   what the user resumed);
3. ``no_trial_told_twice``: trial numbers are unique and contiguous per Optuna study, no worker's log shows an
   ``UpdateFinishedTrialError`` (a tell of a finished trial), and every finished trial was told by one driver;
4. ``one_driver_at_a_time``: each study's writes (a trial asked for, by its ``driver``, at its start; a trial told,
   by its ``told_by``, at its end; a trial continued from a checkpoint counts only as told) are assigned to the
   claim of that driver they follow (each worker logs ``runs study``); the spans of two claims by different
   drivers never overlap, and no write comes from a driver that had not claimed the study;
5. ``no_5xx_but_503_in_outages``: no response of 500 or above except a 503 whose request overlapped an outage window
   (stop to start, plus :data:`OUTAGE_SLACK_S`); ``no_client_exceptions``: no client call raised;
6. ``epochs_spent_matches``: every study record's ``epochs_spent`` equals
   :func:`service.optuna_queries.epochs_spent` of its Optuna study (every stored trial's epochs).

It prints one table (submitted, finished, cancelled, failed, faults by kind, responses by status, each invariant)
and writes ``soak.json`` (every invariant a boolean, the counts, every violation) under ``--out`` (default: a temp
folder, printed). Exit status 1 when an invariant fails. Progress lines as it runs (one per fault, a status line
every ``--status-every`` seconds), so a one-hour run can be watched in its log.

    python benchmarks/soak.py                        # 60 minutes, 3 workers
    python benchmarks/soak.py --quick                # the same faults compressed, under 3 minutes (make bench)
    python benchmarks/soak.py --minutes 10 --workers 2 --seed 7 --out /tmp/soak

Last line: ``soak: 0 lost, 0 stuck, 0 double-driven, every cancel honoured (N) over M min, F faults (goal: every
invariant)``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.testing.pg import PrivatePostgres  # noqa: E402
from service.testing.server import WRITE_KEY, Server, start_server, start_worker  # noqa: E402
from service.testing.specs import quick_spec, smallest_comparison  # noqa: E402

#: Short staleness and lease, so that a paused worker loses its study within seconds.
STALE_S, LEASE_TTL_S = 4.0, 4.0
#: A worker acts on a cancel at its next heartbeat (0.5 s) and its run stops within a poll (0.5 s); the rest is slack.
CANCEL_GRACE_S = 3.0
#: A 503 up to this long after PostgreSQL is back still belongs to the outage (pools reconnecting).
OUTAGE_SLACK_S = 3.0
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


# -- configuration -----------------------------------------------------------------------------------------------


@dataclass
class Config:
    minutes: float = 60.0
    workers: int = 3
    seed: int = 0
    out: Path | None = None
    kill_every_s: float = 120.0
    pg_every_s: float = 600.0
    outage_s: float = 5.0
    stop_at: float = 0.45  # when the SIGSTOP comes, as a fraction of the fault phase
    drain_s: float = 600.0
    chaos_every_s: float = 10.0
    status_every_s: float = 60.0
    ray_cpus: int = 0  # 0: workers + 1
    quick: bool = False

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    @property
    def pause_s(self) -> float:
        """The SIGSTOP: longer than staleness and the lease together."""
        return STALE_S + LEASE_TTL_S + 2.0


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the same faults compressed: under 3 minutes in all")
    p.add_argument("--minutes", type=float, help="length of the fault phase (default 60; --quick 1.75)")
    p.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clients' and the faults' random choices")
    p.add_argument("--out", type=Path, help="folder for soak.json and the processes' logs (default: a temp folder)")
    p.add_argument("--kill-every", type=float, help="seconds between SIGKILLs of a worker (120; --quick 30)")
    p.add_argument("--pg-every", type=float, help="seconds between PostgreSQL restarts (600; --quick a third)")
    p.add_argument("--outage-s", type=float, help="how long PostgreSQL stays down each time (5; --quick 3)")
    p.add_argument("--drain-s", type=float, help="the longest wait for everything to end (600; --quick 75)")
    p.add_argument("--ray-cpus", type=int, default=0, help="logical CPUs of the local Ray (default workers + 1)")
    a = p.parse_args(argv)
    c = Config(workers=a.workers, seed=a.seed, out=a.out, ray_cpus=a.ray_cpus, quick=a.quick)
    if a.quick:
        c.minutes, c.kill_every_s, c.outage_s, c.drain_s = 1.75, 30.0, 3.0, 75.0
        c.chaos_every_s, c.status_every_s = 3.0, 15.0
    if a.minutes is not None:
        c.minutes = a.minutes
    if a.quick:
        c.pg_every_s = c.seconds / 3
    c.kill_every_s = a.kill_every if a.kill_every is not None else c.kill_every_s
    c.pg_every_s = a.pg_every if a.pg_every is not None else c.pg_every_s
    c.outage_s = a.outage_s if a.outage_s is not None else c.outage_s
    c.drain_s = a.drain_s if a.drain_s is not None else c.drain_s
    return c


# -- what happened -----------------------------------------------------------------------------------------------


@dataclass
class Call:
    start: float  # time.time()
    end: float
    route: str  # "POST /v1/studies/{id}/cancel"
    status: int | None  # None: the call raised


@dataclass
class Record:
    """Everything the clients and the fault schedule did, with wall-clock times (thread-safe)."""

    t0: float = field(default_factory=time.time)
    calls: list[Call] = field(default_factory=list)
    exceptions: Counter = field(default_factory=Counter)
    faults: list[tuple[float, str, str]] = field(default_factory=list)
    outages: list[list[float]] = field(default_factory=list)  # [stop called, started again] (end inf while down)
    studies: dict[str, str] = field(default_factory=dict)  # accepted submits: id -> name
    comparisons: dict[str, str] = field(default_factory=dict)
    actions: dict[tuple[str, str], list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, line: str) -> None:
        print(f"[{time.time() - self.t0:7.1f} s] {line}", flush=True)

    def fault(self, kind: str, detail: str) -> None:
        with self.lock:
            self.faults.append((time.time(), kind, detail))
        self.say(f"FAULT {kind}: {detail}")

    def action(self, kind: str, target: str, what: str, at: float) -> None:
        with self.lock:
            self.actions[(kind, target)].append((at, what))


class Api:
    """The REST API as the clients see it: every call's route and status recorded, every exception counted."""

    def __init__(self, url: str, record: Record) -> None:
        self.record = record
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30)

    def call(self, method: str, route: str, path: str, **kw) -> httpx.Response | None:
        start = time.time()
        try:
            r = self.http.request(method, path, **kw)
        except Exception as e:  # counted and reported: a client call that raised is a failure of the soak
            with self.record.lock:
                self.record.calls.append(Call(start, time.time(), f"{method} {route}", None))
                self.record.exceptions[f"{method} {route}: {type(e).__name__}: {str(e)[:120]}"] += 1
            return None
        with self.record.lock:
            self.record.calls.append(Call(start, time.time(), f"{method} {route}", r.status_code))
        return r

    def close(self) -> None:
        self.http.close()


# -- the processes -----------------------------------------------------------------------------------------------

_RAY_HOLDER = """
import signal, sys, time, ray
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit through atexit: ray.shutdown() stops the local cluster
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False, _temp_dir=sys.argv[2])
print(ray.get_runtime_context().gcs_address, flush=True)
while True:
    time.sleep(3600)
"""


class Cluster:
    """The private PostgreSQL, the local Ray, the API and the workers; :meth:`close` stops all of it, always."""

    def __init__(self, config: Config, folder: Path, record: Record) -> None:
        self.config, self.folder, self.record = config, folder, record
        self.pg: PrivatePostgres | None = None
        self.ray: subprocess.Popen | None = None
        self.ray_dir = Path(tempfile.mkdtemp(prefix="soakray-"))  # short: Ray's socket paths have a length limit
        self.ray_address = ""
        self.api: Server | None = None
        self.workers: list[subprocess.Popen | None] = [None] * config.workers
        self.incarnations = [0] * config.workers
        self.paused: set[int] = set()
        self.env: dict[str, str] = {}
        self._closed = False

    @property
    def url(self) -> str:
        assert self.pg is not None
        return self.pg.url

    def start(self) -> None:
        """Ray (its holder starts first: it takes longest), PostgreSQL and the API meanwhile, then the workers."""
        cpus = self.config.ray_cpus or self.config.workers + 1
        ray_log = (self.folder / "ray-holder.log").open("w")
        # token authentication (Ray's default for a local cluster) for every process of ours: the token is the
        # user's (~/.ray/auth_token), the mode is what a joining process must be told
        ray_env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token"}
        self.ray = subprocess.Popen(
            [sys.executable, "-c", _RAY_HOLDER, str(cpus), str(self.ray_dir)],
            stdout=subprocess.PIPE,
            stderr=ray_log,
            text=True,
            env=ray_env,
        )
        self.pg = PrivatePostgres()
        self.pg.start()
        self.record.say(f"PostgreSQL up on port {self.pg.port} ({self.pg.root})")
        self.env = {
            "RAY_AUTH_MODE": "token",
            "TVLARS_WORKER_STALE_S": str(STALE_S),
            "TVLARS_LEASE_TTL_S": str(LEASE_TTL_S),
            "TVLARS_RAY_RESULTS_DIR": str(self.folder / "ray-results"),
        }
        self.api = start_server(self.url, self.folder, workers=0, ready=False, **self.env)
        self.record.say(f"API up at {self.api.url}")
        line = self.ray.stdout.readline().strip() if self.ray.stdout else ""
        if not line:
            raise RuntimeError(f"the local Ray did not start; see {self.folder / 'ray-holder.log'}")
        self.ray_address = self.env["RAY_ADDRESS"] = line
        self.record.say(f"Ray up at {self.ray_address} ({cpus} CPUs)")
        for slot in range(self.config.workers):
            self.start_worker(slot)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 180.0) -> None:
        assert self.api is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.api.url + "/readyz", timeout=5)
                if r.status_code == 200 and r.json().get("workers", 0) >= self.config.workers:
                    self.record.say(f"{self.config.workers} workers ready")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the workers were not ready after {timeout_s} s; see {self.folder}")

    def start_worker(self, slot: int) -> None:
        self.incarnations[slot] += 1
        name = f"{slot}.{self.incarnations[slot]}"
        self.workers[slot] = start_worker(self.url, self.folder, name, **self.env)

    def worker_logs(self) -> list[Path]:
        return sorted(self.folder.glob("worker-*.log"))

    def driving(self) -> list[int]:
        """The slots whose worker drives a study now (from the workers table; [] while the database is away)."""
        import sqlalchemy as sa

        pids = {p.pid: slot for slot, p in enumerate(self.workers) if p is not None and p.poll() is None}
        try:
            engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT w.pid FROM tvlars_workers w JOIN tvlars_studies s ON s.id = w.study_id "
                        "WHERE s.state = 'RUNNING' AND s.worker_id = w.id AND w.stopped_at IS NULL"
                    )
                ).all()
            engine.dispose()
        except Exception:
            return []
        return sorted({pids[r[0]] for r in rows if r[0] in pids} - self.paused)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for p in self.workers:
            if p is not None and p.poll() is None:
                _signal(p, signal.SIGCONT)
                _signal(p, signal.SIGTERM)
        for p in self.workers:
            _reap(p, 30)
        if self.api is not None:
            try:
                self.api.stop()
            except Exception as e:
                print(f"stopping the API: {e}", file=sys.stderr)
        if self.ray is not None and self.ray.poll() is None:
            self.ray.terminate()
            _reap(self.ray, 60)
        self._kill_strays()
        shutil.rmtree(self.ray_dir, ignore_errors=True)
        if self.pg is not None:
            self.pg.close()

    def _kill_strays(self) -> None:
        """Ray processes of our cluster still alive (its holder killed hard): found by our Ray folder, by pid."""
        marker = str(self.ray_dir)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except OSError:
                    pass


def _signal(p: subprocess.Popen, sig: int) -> None:
    try:
        p.send_signal(sig)
    except OSError:
        pass


def _reap(p: subprocess.Popen | None, timeout_s: float) -> None:
    if p is None:
        return
    try:
        p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


# -- the faults --------------------------------------------------------------------------------------------------


def schedule(config: Config) -> list[tuple[float, str]]:
    """(seconds into the fault phase, kind) of every fault, in time order."""
    T = config.seconds
    events = [(t, "kill") for t in _every(config.kill_every_s, T)]
    events += [(t, "pg_restart") for t in _every(config.pg_every_s, T)]
    events.append((config.stop_at * T, "sigstop"))
    return sorted(events)


def _every(step: float, total: float) -> list[float]:
    return [step * i for i in range(1, int(total / step) + 1) if step * i < total - 1.0]


def run_faults(config: Config, cluster: Cluster, record: Record, stop: threading.Event, rng: random.Random) -> None:
    """Inject each fault at its time (or, if the previous one ran late, right after it): every fault of the schedule
    is injected, however slow the machine; ``stop`` (an interrupt) ends it early."""
    start = time.monotonic()
    restarts = 0
    for at, kind in schedule(config):
        if stop.wait(max(0.0, at - (time.monotonic() - start))):
            return
        if kind == "kill":
            driving = cluster.driving()
            alive = [s for s, p in enumerate(cluster.workers) if p is not None and p.poll() is None]
            slot = rng.choice(driving or [s for s in alive if s not in cluster.paused] or alive)
            p = cluster.workers[slot]
            assert p is not None
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            cluster.paused.discard(slot)
            record.fault("kill", f"SIGKILL worker {slot} (pid {p.pid}{', driving a study' if slot in driving else ''})")
            cluster.start_worker(slot)
            record.say(f"worker {slot} restarted (incarnation {cluster.incarnations[slot]})")
        elif kind == "pg_restart":
            assert cluster.pg is not None
            mode = "fast" if restarts % 2 == 0 else "immediate"
            restarts += 1
            window = [time.time(), float("inf")]
            with record.lock:
                record.outages.append(window)
            cluster.pg.stop(mode)
            record.fault("pg_restart", f"PostgreSQL stopped ({mode}) for {config.outage_s:.0f} s")
            time.sleep(config.outage_s)
            cluster.pg.start()
            window[1] = time.time()
            record.say(f"PostgreSQL back after {window[1] - window[0]:.1f} s")
        elif kind == "sigstop":
            driving = cluster.driving()
            if not driving:  # wait a little for a worker that drives a study: the pause is meant to lose one
                deadline = time.monotonic() + 20
                while not driving and time.monotonic() < deadline and not stop.is_set():
                    time.sleep(0.5)
                    driving = cluster.driving()
            alive = [s for s, p in enumerate(cluster.workers) if p is not None and p.poll() is None]
            slot = rng.choice(driving or alive)
            p = cluster.workers[slot]
            assert p is not None
            os.kill(p.pid, signal.SIGSTOP)
            cluster.paused.add(slot)
            record.fault(
                "sigstop",
                f"SIGSTOP worker {slot} (pid {p.pid}{', driving a study' if driving else ''}) for "
                f"{config.pause_s:.0f} s (stale {STALE_S:.0f} s + lease {LEASE_TTL_S:.0f} s + 2)",
            )
            stop.wait(config.pause_s)
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
            cluster.paused.discard(slot)
            record.say(f"SIGCONT worker {slot}")


# -- the clients -------------------------------------------------------------------------------------------------


def study_spec(rng: random.Random) -> dict:
    asha = {"name": "asha", "grace_period": 1, "reduction_factor": 2}
    scheduler = asha if rng.random() < 0.25 else {"name": "none"}  # Tune's run (asha) costs seconds to start
    return quick_spec(
        f"soak-{uuid.uuid4().hex[:10]}",
        workload={"epochs": rng.choice([2, 3])},
        budget={"n_trials": rng.choice([2, 3]), "max_concurrent": 1, "max_failed": 3},
        sampler={"name": "random", "seed": rng.randrange(1000)},
        scheduler=scheduler,
    )


def submitter(api: Api, record: Record, stop: threading.Event, until: float, workers: int, seed: int) -> None:
    """Submit a study whenever none waits in the queue and fewer than ``workers`` run (until ``until``): the
    workers stay busy and the queue short, so the drain is short too."""
    rng = random.Random(seed)
    while not stop.wait(1.0) and time.time() < until:
        r = api.call("GET", "/v1/studies", "/v1/studies", params={"state": "QUEUED", "limit": 1})
        if r is None or r.status_code != 200 or r.json()["total"] > 0:
            continue
        r = api.call("GET", "/v1/studies", "/v1/studies", params={"state": "RUNNING", "limit": 1})
        if r is None or r.status_code != 200 or r.json()["total"] >= workers:
            continue
        _submit(api, record, "/v1/studies", study_spec(rng), record.studies)


def comparer(api: Api, record: Record, stop: threading.Event, until: float) -> None:
    """Keep one comparison in flight (until ``until``)."""
    current: str | None = None
    while not stop.wait(2.0) and time.time() < until:
        if current is not None:
            r = api.call("GET", "/v1/comparisons/{id}", f"/v1/comparisons/{current}")
            if r is None or r.status_code != 200 or r.json()["state"] not in TERMINAL:
                continue
        body = smallest_comparison(f"soakc-{uuid.uuid4().hex[:10]}")
        current = _submit(api, record, "/v1/comparisons", body, record.comparisons) or current


def _submit(api: Api, record: Record, route: str, body: dict, into: dict[str, str]) -> str | None:
    """POST with an Idempotency-Key, retried through 503s (the same key: never submitted twice). Returns the id."""
    key = uuid.uuid4().hex
    for _ in range(30):
        r = api.call("POST", route, route, json=body, headers={"Idempotency-Key": key})
        if r is not None and r.status_code in (200, 201):
            with record.lock:
                into[r.json()["id"]] = body["name"]
            return r.json()["id"]
        if r is not None and r.status_code != 503:
            record.say(f"submit {route} answered {r.status_code}: {r.text[:200]}")
            return None
        time.sleep(1.0)
    return None


def chaos(api: Api, record: Record, stop: threading.Event, every_s: float, until: float, seed: int) -> None:
    """Random cancels and resumes, of studies and comparisons, now and then a cancel → resume → cancel burst (until
    ``until``: what a late resume queues would only lengthen the drain). An action counts once the API accepted it
    (202)."""
    rng = random.Random(seed)
    while not stop.wait(rng.uniform(0.5, 1.5) * every_s) and time.time() < until:
        kind = rng.choice(["study", "study", "comparison"])
        with record.lock:
            pool = list((record.studies if kind == "study" else record.comparisons).keys())
        if not pool:
            continue
        target = rng.choice(pool[-12:])  # the recent ones: likely still running
        base = f"/v1/{'studies' if kind == 'study' else 'comparisons'}/{target}"
        route = "/v1/studies/{id}" if kind == "study" else "/v1/comparisons/{id}"
        r = api.call("GET", route, base)
        if r is None or r.status_code != 200:
            continue
        state = r.json()["state"]
        if state in ("QUEUED", "RUNNING"):
            plan = ["cancel"] if rng.random() < 0.6 else ["cancel", "resume", "cancel"]
        elif state in ("CANCELLED", "FAILED"):
            plan = ["resume"] if rng.random() < 0.6 else ["resume", "cancel", "resume"]
        else:
            continue
        for i, what in enumerate(plan):
            if i:
                time.sleep(rng.choice([0.0, 0.2, 1.0, 3.0]))
            r = api.call("POST", f"{route}/{what}", f"{base}/{what}")
            if r is not None and r.status_code == 202:
                record.action(kind, target, what, time.time())
                record.say(f"{what} {kind} {target[:8]}: accepted")
            elif r is not None and r.status_code == 409 and kind == "study" and what == "resume":
                # a study's cancel is a request its worker acts on: the resume waits for it to end
                for _ in range(20):
                    time.sleep(0.5)
                    r = api.call("POST", f"{route}/{what}", f"{base}/{what}")
                    if r is None or r.status_code != 409:
                        break
                if r is not None and r.status_code == 202:
                    record.action(kind, target, what, time.time())
                    record.say(f"{what} {kind} {target[:8]}: accepted (after it ended)")


def reader(api: Api, record: Record, stop: threading.Event, seed: int) -> None:
    """Reads as a dashboard would: the study list, a study, its leaderboard, a comparison."""
    rng = random.Random(seed)
    while not stop.wait(rng.uniform(0.5, 1.5)):
        api.call("GET", "/v1/studies", "/v1/studies", params={"limit": 20})
        with record.lock:
            studies, comparisons = list(record.studies), list(record.comparisons)
        if studies:
            sid = rng.choice(studies)
            api.call("GET", "/v1/studies/{id}", f"/v1/studies/{sid}")
            api.call("GET", "/v1/studies/{id}/leaderboard", f"/v1/studies/{sid}/leaderboard", params={"limit": 5})
        if comparisons:
            api.call("GET", "/v1/comparisons/{id}", f"/v1/comparisons/{rng.choice(comparisons)}")


def warm_up(url: str) -> None:
    """One comparison dry run before the clients start: the API's first submit builds models on the meta device
    (torch imported, workloads registered), seconds on a busy machine that no client's timeout should pay."""
    body = {**smallest_comparison("soak-warm-up"), "dry_run": True}
    r = httpx.post(url + "/v1/comparisons", json=body, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=300)
    r.raise_for_status()


def guarded(record: Record, name: str, fn: Callable[[], None]) -> threading.Thread:
    """A client thread; one that dies of an exception is counted (never a silently missing client)."""

    def body() -> None:
        try:
            fn()
        except Exception as e:
            with record.lock:
                record.exceptions[f"client {name} died: {type(e).__name__}: {e}"] += 1
            record.say(f"client {name} died: {type(e).__name__}: {e}")

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


# -- the checks --------------------------------------------------------------------------------------------------


@dataclass
class Check:
    held: bool
    violations: list[str] = field(default_factory=list)


def _local_ts(value) -> float | None:
    """A stored timestamp as epoch seconds: Optuna's are naive local time, the service's aware."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_READY = re.compile(r"worker (\S+) ready")
_RUNS = re.compile(r"worker (\S+) runs study (\S+) \(")


def claims_from_logs(logs: list[Path]) -> tuple[dict[str, list[tuple[float, str]]], int]:
    """Each study's claims from the workers' logs (``runs study``): name -> [(time, worker id)], in time order; and
    how many tells of a finished trial (``UpdateFinishedTrialError``) the logs show."""
    claims: dict[str, list[tuple[float, str]]] = defaultdict(list)
    double_tells = 0
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if "UpdateFinishedTrialError" in line:
                double_tells += 1
            m, r = _LOG_TIME.match(line), _RUNS.search(line)
            if m and r:
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                claims[r.group(2)].append((at, r.group(1)))
    for name in claims:
        claims[name].sort()
    return claims, double_tells


def effective_cancel(at: float, outages: list[list[float]]) -> float:
    """When a cancel accepted at ``at`` must have taken effect by: CANCEL_GRACE_S later, or that long after an
    outage that began within the grace (the worker hears of it once the database is back)."""
    ref = at
    for start, end in sorted(outages):
        if ref <= start <= ref + CANCEL_GRACE_S:
            ref = max(ref, end)
    return ref + CANCEL_GRACE_S


def check(url: str, record: Record, logs: list[Path]) -> tuple[dict[str, Check], dict]:
    """Every invariant, from storage. Returns the checks and the counts."""
    import optuna
    import sqlalchemy as sa

    from service.optuna_queries import epochs_spent
    from service.trial_report import TrialAttr

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    storage = optuna.storages.RDBStorage(url)
    with engine.connect() as conn:
        studies = {
            r.id: r
            for r in conn.execute(
                sa.text("SELECT id, name, state, error, epochs_spent, comparison_id, finished_at FROM tvlars_studies")
            )
        }
        comparisons = {
            r.id: r for r in conn.execute(sa.text("SELECT id, name, state, error, phase FROM tvlars_comparisons"))
        }
    optuna_names = {s.study_name for s in storage.get_all_studies()}
    trials = {
        name: optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False) for name in optuna_names
    }
    claims, double_tells = claims_from_logs(logs)
    checks: dict[str, Check] = {}

    # 1. everything ended, nothing accepted was lost
    c = Check(True)
    for sid, name in record.studies.items():
        if sid not in studies:
            c.violations.append(f"study {name} ({sid}) accepted but not stored")
    for cid, name in record.comparisons.items():
        if cid not in comparisons:
            c.violations.append(f"comparison {name} ({cid}) accepted but not stored")
    lost = len(c.violations)
    stuck = [f"study {r.name} {r.state}" for r in studies.values() if r.state not in TERMINAL]
    stuck += [f"comparison {r.name} {r.state} ({r.phase})" for r in comparisons.values() if r.state not in TERMINAL]
    c.violations += stuck
    c.held = not c.violations
    checks["all_terminal"] = c

    # 2. cancels and resumes honoured
    cancels, resumes = Check(True), Check(True)
    honoured_cancels = 0
    for (kind, target), actions in record.actions.items():
        last_at, last = max(actions)
        if kind == "study":
            row, members = studies.get(target), [studies.get(target)]
        else:
            row = comparisons.get(target)
            members = [s for s in studies.values() if s.comparison_id == target]
        if row is None:
            continue
        if last == "cancel":
            deadline = effective_cancel(last_at, record.outages)
            bad = []
            if kind == "comparison" and row.state != "CANCELLED":
                bad.append(f"comparison {row.name} ended {row.state}")
            for s in members:
                if s is None or s.state == "CANCELLED":
                    continue
                late = [
                    t.number
                    for t in trials.get(s.name, [])
                    if max(_local_ts(t.datetime_start) or 0, _local_ts(t.datetime_complete) or 0) > deadline
                ]
                if late:
                    bad.append(f"study {s.name} ended {s.state} with trials {late} asked or told after the cancel")
            cancels.violations += [f"{b} (cancel accepted at +{last_at - record.t0:.1f} s)" for b in bad]
            honoured_cancels += not bad
        else:
            if row.state == "CANCELLED":
                resumes.violations.append(f"{kind} {row.name} ended CANCELLED after an accepted resume")
            if kind == "comparison" and row.state == "FAILED" and "CANCELLED" in (row.error or ""):
                resumes.violations.append(f"comparison {row.name} FAILED after a resume: {row.error}")
    cancels.held, resumes.held = not cancels.violations, not resumes.violations
    checks["cancels_honoured"], checks["resumes_honoured"] = cancels, resumes

    # 3. no trial told twice
    c = Check(True)
    for name, ts in trials.items():
        numbers = sorted(t.number for t in ts)
        if numbers != list(range(len(numbers))):
            c.violations.append(f"study {name}: trial numbers {numbers}")
    if double_tells:
        c.violations.append(f"{double_tells} UpdateFinishedTrialError line(s) in the workers' logs")
    c.held = not c.violations
    checks["no_trial_told_twice"] = c

    # 4. one driver at a time
    c = Check(True)
    double_driven = set()
    for name, ts in trials.items():
        events: list[tuple[float, str, str]] = []
        for t in ts:
            driver, told = t.user_attrs.get(TrialAttr.DRIVER), t.user_attrs.get(TrialAttr.TOLD_BY)
            if driver and not t.user_attrs.get(TrialAttr.RESTARTS) and t.datetime_start is not None:
                events.append((_local_ts(t.datetime_start), driver, f"asked {t.number}"))
            if told and t.datetime_complete is not None:
                events.append((_local_ts(t.datetime_complete), told, f"told {t.number}"))
        spans: dict[tuple[str, float], list[float]] = {}
        for at, driver, what in sorted(events):
            mine = [start for start, who in claims.get(name, []) if who == driver and start <= at + 0.5]
            if not mine:
                c.violations.append(f"study {name}: {what} by {driver}, which never claimed it before")
                double_driven.add(name)
                continue
            span = spans.setdefault((driver, mine[-1]), [at, at])
            span[0], span[1] = min(span[0], at), max(span[1], at)
        ordered = sorted((s[0], s[1], driver) for (driver, _), s in spans.items())
        for i, (_, a1, da) in enumerate(ordered):
            for b0, _, db in ordered[i + 1 :]:
                if da == db or b0 >= a1:
                    continue
                c.violations.append(
                    f"study {name}: {da} wrote until +{a1 - record.t0:.1f} s, {db} from +{b0 - record.t0:.1f} s"
                )
                double_driven.add(name)
    c.held = not c.violations
    checks["one_driver_at_a_time"] = c

    # 5. no 5xx but a 503 during an outage; no client exceptions
    c = Check(True)
    for call in record.calls:
        if call.status is None or call.status < 500:
            continue
        in_outage = any(call.end >= s and call.start <= e + OUTAGE_SLACK_S for s, e in record.outages)
        if call.status != 503 or not in_outage:
            c.violations.append(f"{call.route} answered {call.status} at +{call.start - record.t0:.1f} s")
    c.held = not c.violations
    checks["no_5xx_but_503_in_outages"] = c
    checks["no_client_exceptions"] = Check(not record.exceptions, [f"{n}x {e}" for e, n in record.exceptions.items()])

    # 6. epochs_spent as stored equals the stored trials' epochs
    c = Check(True)
    for r in studies.values():
        expected = 0
        if r.name in optuna_names:
            expected = epochs_spent(optuna.load_study(study_name=r.name, storage=storage))
        if (r.epochs_spent or 0) != expected:
            c.violations.append(f"study {r.name} ({r.state}): epochs_spent {r.epochs_spent}, trials' epochs {expected}")
    c.held = not c.violations
    checks["epochs_spent_matches"] = c

    storage.engine.dispose()
    engine.dispose()
    by_state = lambda rows: dict(Counter(r.state for r in rows))  # noqa: E731
    counts = {
        "studies": by_state(studies.values()),
        "plain_studies_submitted": len(record.studies),
        "comparison_studies": sum(1 for r in studies.values() if r.comparison_id),
        "comparisons": by_state(comparisons.values()),
        "comparisons_submitted": len(record.comparisons),
        "trials": dict(Counter(t.state.name for ts in trials.values() for t in ts)),
        "cancels_accepted": sum(1 for a in record.actions.values() for _, w in a if w == "cancel"),
        "resumes_accepted": sum(1 for a in record.actions.values() for _, w in a if w == "resume"),
        "cancels_checked": sum(1 for a in record.actions.values() if max(a)[1] == "cancel"),
        "cancels_honoured": honoured_cancels,
        "lost": lost,
        "stuck": len(stuck),
        "double_driven": len(double_driven),
        "failed": [f"study {r.name}: {r.error}" for r in studies.values() if r.state == "FAILED"]
        + [f"comparison {r.name}: {r.error}" for r in comparisons.values() if r.state == "FAILED"],
    }
    return checks, counts


# -- the run -----------------------------------------------------------------------------------------------------


def status_line(record: Record, cluster: Cluster) -> str:
    import sqlalchemy as sa

    with record.lock:
        statuses = Counter(c.status for c in record.calls)
        n_studies, n_comparisons, n_faults = len(record.studies), len(record.comparisons), len(record.faults)
        errors = sum(record.exceptions.values())
    states = "?"
    try:
        engine = sa.create_engine(cluster.url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT state, count(*) FROM tvlars_studies GROUP BY state")).all()
        engine.dispose()
        states = " ".join(f"{s} {n}" for s, n in sorted(rows))
    except Exception:
        states = "(database away)"
    shown = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])))
    return (
        f"status: submitted {n_studies} studies, {n_comparisons} comparisons; studies {states}; faults {n_faults}; "
        f"responses {shown}; client exceptions {errors}"
    )


def drain(config: Config, cluster: Cluster, record: Record) -> None:
    """Everything back up, then wait for every study and comparison to end (up to ``drain_s``)."""
    import sqlalchemy as sa

    assert cluster.pg is not None
    if not cluster.pg.accepts_connections():
        cluster.pg.start()
    for slot, p in enumerate(cluster.workers):
        if p is not None and p.poll() is None and slot in cluster.paused:
            os.kill(p.pid, signal.SIGCONT)
            cluster.paused.discard(slot)
        if p is None or p.poll() is not None:
            cluster.start_worker(slot)
    engine = sa.create_engine(cluster.url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + config.drain_s
    left = -1
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                left = conn.execute(
                    sa.text(
                        "SELECT (SELECT count(*) FROM tvlars_studies WHERE state IN ('QUEUED', 'RUNNING')) + "
                        "(SELECT count(*) FROM tvlars_comparisons WHERE state IN ('QUEUED', 'RUNNING'))"
                    )
                ).scalar()
            if left == 0:
                break
            time.sleep(1.0)
    finally:
        engine.dispose()
    record.say(f"drained: {left} not ended after {config.drain_s - max(0.0, deadline - time.monotonic()):.0f} s")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run(config: Config) -> int:
    folder = config.out or Path(tempfile.mkdtemp(prefix="tvlars-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    record = Record()
    cluster = Cluster(config, folder, record)
    atexit.register(cluster.close)
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM unwinds as Ctrl-C does: through cluster.close()
    rng = random.Random(config.seed)
    record.say(
        f"soak: {config.minutes:g} min of faults, {config.workers} workers, seed {config.seed}; logs in {folder}; "
        f"schedule: {Counter(k for _, k in schedule(config))}"
    )
    started = time.monotonic()
    interrupted = threading.Event()  # ends the fault schedule early (an exception, Ctrl-C, SIGTERM)
    try:
        cluster.start()
        assert cluster.api is not None
        warm_up(cluster.api.url)
        record.t0 = time.time()
        stop = threading.Event()
        end = time.time() + config.seconds
        tail = min(60.0, config.seconds / 4)  # no new work at the very end: the drain stays short
        apis = [Api(cluster.api.url, record) for _ in range(4)]
        threads = [
            guarded(record, "submitter", lambda: submitter(apis[0], record, stop, end - tail, config.workers, 1)),
            guarded(record, "comparer", lambda: comparer(apis[1], record, stop, end - 2 * tail)),
            guarded(
                record, "chaos", lambda: chaos(apis[2], record, stop, config.chaos_every_s, end - tail, config.seed + 2)
            ),
            guarded(record, "reader", lambda: reader(apis[3], record, stop, config.seed + 3)),
        ]
        faults = guarded(record, "faults", lambda: run_faults(config, cluster, record, interrupted, rng))
        shown = time.monotonic()
        while time.time() < end or faults.is_alive():  # the clients run on while late faults are injected
            time.sleep(1.0)
            if time.monotonic() - shown >= config.status_every_s:
                record.say(status_line(record, cluster))
                shown = time.monotonic()
        stop.set()
        for t in threads:
            t.join(timeout=config.pause_s + 60)
            if t.is_alive():
                record.exceptions[f"client {t.name} did not stop"] += 1
        for api in apis:
            api.close()
        drain(config, cluster, record)
        checks, counts = check(cluster.url, record, cluster.worker_logs())
    finally:
        interrupted.set()
        cluster.close()
    wall = time.monotonic() - started
    return report(config, record, checks, counts, folder, wall)


def report(config: Config, record: Record, checks: dict[str, Check], counts: dict, folder: Path, wall: float) -> int:
    from rich.console import Console
    from rich.table import Table

    faults = Counter(kind for _, kind, _ in record.faults)
    statuses = Counter(str(c.status) if c.status is not None else "exception" for c in record.calls)
    by_route: dict[str, Counter] = defaultdict(Counter)
    for call in record.calls:
        by_route[call.route][str(call.status)] += 1
    table = Table(title=f"soak: {config.minutes:g} min of faults, {config.workers} workers ({wall:.0f} s in all)")
    table.add_column("what")
    table.add_column("figure", overflow="fold")
    studies, comparisons = counts["studies"], counts["comparisons"]
    table.add_row(
        "submitted",
        f"{counts['plain_studies_submitted']} studies, {counts['comparisons_submitted']} "
        f"comparisons ({counts['comparison_studies']} comparison studies)",
    )
    table.add_row(
        "finished",
        f"studies {studies.get('SUCCEEDED', 0)} SUCCEEDED; comparisons "
        f"{comparisons.get('SUCCEEDED', 0)} SUCCEEDED; trials {counts['trials']}",
    )
    table.add_row(
        "cancelled",
        f"studies {studies.get('CANCELLED', 0)}, comparisons {comparisons.get('CANCELLED', 0)}"
        f" ({counts['cancels_accepted']} cancels, {counts['resumes_accepted']} resumes accepted)",
    )
    table.add_row(
        "failed",
        f"studies {studies.get('FAILED', 0)}, comparisons {comparisons.get('FAILED', 0)}"
        + "".join(f"\n{f[:160]}" for f in counts["failed"][:5]),
    )
    table.add_row("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none")
    table.add_row("responses by status", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    table.add_row("client exceptions", str(sum(record.exceptions.values())))
    for name, c in checks.items():
        shown = "yes" if c.held else "[red]NO[/red]" + "".join(f"\n{v[:200]}" for v in c.violations[:5])
        table.add_row(f"invariant {name}", shown)
    Console(width=140).print(table)
    out = {
        "invariants": {name: c.held for name, c in checks.items()},
        "violations": {name: c.violations for name, c in checks.items() if c.violations},
        "counts": counts,
        "faults": dict(faults),
        "fault_log": [{"at_s": round(t - record.t0, 1), "kind": k, "detail": d} for t, k, d in record.faults],
        "outages_s": [[round(s - record.t0, 1), round(e - record.t0, 1)] for s, e in record.outages],
        "responses_by_status": dict(statuses),
        "responses_by_route": {r: dict(c) for r, c in sorted(by_route.items())},
        "client_exceptions": dict(record.exceptions),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "wall_s": round(wall, 1),
    }
    (folder / "soak.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"soak.json and the processes' logs in {folder}")
    held = all(c.held for c in checks.values())
    cancels = "every cancel honoured" if checks["cancels_honoured"].held else "NOT every cancel honoured"
    print(
        f"soak: {counts['lost']} lost, {counts['stuck']} stuck, {counts['double_driven']} double-driven, {cancels} "
        f"({counts['cancels_honoured']}/{counts['cancels_checked']}) over {config.minutes:g} min, "
        f"{sum(faults.values())} faults (goal: every invariant; {'all held' if held else 'SOME FAILED'})"
    )
    return 0 if held else 1


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
