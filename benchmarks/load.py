"""Load: mixed reads and writes from concurrent clients against a real server on PostgreSQL, for a fixed time.

One study of 10 000 trials is seeded; the server runs without workers (submitted studies stay QUEUED, so the load
is the API's alone). Each client loops over a mix: leaderboard, study, trials page, the study list, a submit
(with an Idempotency-Key) and a cancel of what it submitted. Any answer other than the expected one is an error, and
so is a call that raised (a timeout, a dropped connection): it counts, by kind, and its client goes on. Latencies
include failed calls (the time until they failed), so timeouts show in the percentiles.

Three phases on the same server, side by side in one run (machines are noisy):

1. **mix**: the clients loop over the mix with no pause between calls (closed loop: latency = clients / throughput);
2. **floor**: the same clients, as fast, on ``GET /healthz`` (no database, no work): what the client threads, the
   HTTP stack and the cores of this machine allow at this concurrency, whatever the API does;
3. **paced**: the mix again, each client pausing about ``--think-ms`` between calls (default 1 s: what ``tvlars-tune
   submit --wait`` does between its polls; nobody reads a leaderboard 100 times a second). Each pause is drawn
   uniformly from 0.5 to 1.5 times that, and each client starts at a random point of its first pause, as a crowd of
   users would (clients started together and paced alike would stay in step and arrive as one burst of 100).

    python benchmarks/load.py [--clients 100] [--seconds 30] [--api-processes 2] [--think-ms 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._clients import gather  # noqa: E402
from benchmarks._seed import fresh_pg_database, seed_study  # noqa: E402
from service.testing.server import WRITE_KEY, start_server  # noqa: E402
from service.testing.specs import quick_spec  # noqa: E402

Latencies = dict[str, list[float]]


def run_client(
    url: str, study_id: str | None, stop: threading.Event, think_s: float = 0.0, seed: int = 0
) -> tuple[Latencies, Counter]:
    """One client's loop until ``stop``: its latencies by kind of call, and its failed calls (a wrong status or an
    exception) by kind. ``study_id`` None: ``GET /healthz`` only (the floor). ``think_s``: the mean pause between
    calls (each drawn from 0.5 to 1.5 times it; the first from 0 to it)."""
    rng = random.Random(seed)
    out: Latencies = defaultdict(list)
    errors: Counter = Counter()
    reads = [
        ("leaderboard", f"/v1/studies/{study_id}/leaderboard?limit=10"),
        ("study", f"/v1/studies/{study_id}"),
        ("trials page", f"/v1/studies/{study_id}/trials?limit=50&offset=2000"),
        ("study list", "/v1/studies?limit=20"),
    ]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30) as c:
        i = 0
        while not stop.wait(think_s * (rng.uniform(0.5, 1.5) if i else rng.random())):
            i += 1
            if study_id is None:
                timed(c, out, errors, "healthz", "GET", "/healthz", 200)
            elif i % 8 == 0:
                name = f"load-{uuid.uuid4().hex[:10]}"
                r = timed(
                    c,
                    out,
                    errors,
                    "submit",
                    "POST",
                    "/v1/studies",
                    201,
                    json=quick_spec(name),
                    headers={"Idempotency-Key": name},
                )
                if r is not None:
                    timed(c, out, errors, "cancel", "POST", f"/v1/studies/{r.json()['id']}/cancel", 202)
            else:
                label, path = reads[i % len(reads)]
                timed(c, out, errors, label, "GET", path, 200)
    return out, errors


def timed(
    c: httpx.Client, out: Latencies, errors: Counter, label: str, method: str, path: str, expected: int, **kwargs
) -> httpx.Response | None:
    """One call: its latency (until the answer, or until it failed) and, unless it answered ``expected``, an error."""
    t = time.perf_counter()
    try:
        r = c.request(method, path, **kwargs)
    except httpx.HTTPError as e:  # a timeout or a dropped connection is an error, never a silently dead client
        out[label].append((time.perf_counter() - t) * 1e3)
        errors[f"{type(e).__name__} ({label})"] += 1
        return None
    out[label].append((time.perf_counter() - t) * 1e3)
    if r.status_code != expected:
        errors[f"HTTP {r.status_code} ({label})"] += 1
        return None
    return r


@dataclass
class Phase:
    name: str
    seconds: float
    latencies: Latencies
    errors: Counter

    @property
    def all(self) -> list[float]:
        return [x for samples in self.latencies.values() for x in samples]

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def per_s(self) -> float:
        failed = sum(n for kind, n in self.errors.items() if not kind.startswith("client died"))
        return (len(self.all) - failed) / self.seconds

    def p(self, q: int, samples: list[float] | None = None) -> float:
        samples = self.all if samples is None else samples
        if len(samples) < 2:
            return samples[0] if samples else float("nan")
        return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]

    def report(self, clients: int) -> None:
        print(
            f"{self.name}: {clients} clients for {self.seconds:.0f} s: {len(self.all)} requests, {self.per_s:.0f}/s "
            f"answered as expected, p50 {self.p(50):.1f} ms, p95 {self.p(95):.1f} ms, p99 {self.p(99):.1f} ms, "
            f"{self.n_errors} errors"
        )
        for label, samples in sorted(self.latencies.items()):
            p50, p99 = self.p(50, samples), self.p(99, samples)
            print(f"    {label:12s} {len(samples):6d}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
        for kind, n in self.errors.most_common():
            print(f"  {n:6d}  {kind}")


def run_phase(name: str, url: str, study_id: str | None, clients: int, seconds: float, think_s: float) -> Phase:
    """``clients`` threads for ``seconds``; a client that died of anything but a failed call counts one error."""
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client") as pool:
        futures = [pool.submit(run_client, url, study_id, stop, think_s, seed) for seed in range(clients)]
        time.sleep(seconds)
        stop.set()
        latencies, errors = gather(futures)
    return Phase(name, seconds, latencies, errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--api-processes", type=int, default=2, help="uvicorn processes (serve --api-processes)")
    parser.add_argument("--think-ms", type=float, default=1000, help="each paced client's pause between calls")
    parser.add_argument("--floor-seconds", type=float, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvlars-load-"))
    with fresh_pg_database() as db:
        study_id = seed_study(db, args.trials)
        server = start_server(db, tmp, workers=0, ready=False, api_processes=args.api_processes)
        try:
            run_phase("warm-up", server.url, study_id, 4, 2, 0)  # connections, caches, compiled queries
            mix = run_phase("mix", server.url, study_id, args.clients, args.seconds, 0)
            floor = run_phase("floor", server.url, None, args.clients, args.floor_seconds, 0)
            paced = run_phase("paced", server.url, study_id, args.clients, args.seconds, args.think_ms / 1e3)
        finally:
            server.stop()
    print(f"PostgreSQL, loopback, {args.api_processes} API processes, {os.cpu_count()} cores shared with the clients")
    for phase in (mix, floor):
        phase.report(args.clients)
    paced.name = f"paced ({args.think_ms:.0f} ms think time)"
    paced.report(args.clients)
    print(
        f"load: mix p99 {mix.p(99):.0f} ms at {mix.per_s:.0f}/s vs floor p99 {floor.p(99):.0f} ms at "
        f"{floor.per_s:.0f}/s (ratio {mix.p(99) / floor.p(99):.2f}); paced p99 {paced.p(99):.0f} ms; "
        f"{mix.n_errors + floor.n_errors + paced.n_errors} errors (goal: 0 errors, p99 <= 200 ms)"
    )
    if mix.n_errors or floor.n_errors or paced.n_errors:
        sys.exit(1)  # figures with failed requests behind them are not a pass


if __name__ == "__main__":
    main()
