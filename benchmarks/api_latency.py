"""API latency: leaderboard and study reads at 10 000 trials on PostgreSQL, and submit → first trial running.

A fresh PostgreSQL database gets one study of 10 000 finished trials (bulk-inserted). A real server
(``tvlars-tune serve``, uvicorn) answers concurrent clients on loopback; each request's latency is measured on the
client. Then a server with a warm worker (Ray already up) takes a small study: the time from the POST's answer to
the first trial in RUNNING.

    python benchmarks/api_latency.py [--trials 10000] [--clients 4 8] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._clients import gather  # noqa: E402
from benchmarks._seed import fresh_pg_database, seed_study  # noqa: E402
from service.testing.server import WRITE_KEY, start_server  # noqa: E402
from service.testing.specs import quick_spec  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        return (samples[0],) * 3 if samples else (float("nan"),) * 3
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[94], q[98]


def hammer(url: str, paths: list[str], clients: int, requests: int) -> tuple[dict[str, list[float]], Counter]:
    """``clients`` threads, each sending ``requests`` requests round-robin over ``paths``: latency per path, and the
    failed requests by kind (a wrong status, or an exception such as a timeout: it counts, and the client goes on)."""

    def client(offset: int) -> tuple[dict[str, list[float]], Counter]:
        out: dict[str, list[float]] = {p: [] for p in paths}
        errors: Counter = Counter()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30) as c:
            for i in range(requests):
                path = paths[(i + offset) % len(paths)]
                t = time.perf_counter()
                try:
                    r = c.get(path)
                except httpx.HTTPError as e:
                    errors[f"{type(e).__name__} {path}"] += 1
                    continue
                dt = (time.perf_counter() - t) * 1e3
                if r.status_code == 200:
                    out[path].append(dt)
                else:
                    errors[f"HTTP {r.status_code} {path}"] += 1
        return out, errors

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client") as pool:
        return gather([pool.submit(client, i) for i in range(clients)])


def print_errors(errors: Counter, indent: str = "  ") -> None:
    if errors:
        print(f"{indent}{sum(errors.values())} errors by kind:")
        for kind, n in errors.most_common():
            print(f"{indent}  {n:6d}  {kind}")


def first_trial_latency(tmp: Path, repeats: int) -> list[float]:
    url = f"sqlite:///{tmp / 'submit.db'}"
    server = start_server(url, tmp, workers=1)  # ready = API up and a worker heartbeating (Ray started)
    try:
        out = []
        with server.client() as c:
            for i in range(repeats):
                spec = quick_spec(f"first-{i}-{time.time_ns()}", budget={"n_trials": 1}, workload={"epochs": 1})
                r = c.post("/v1/studies", json=spec)
                t0 = time.perf_counter()
                study_id = r.json()["id"]
                while True:
                    r = c.get(f"/v1/studies/{study_id}/trials")
                    if r.status_code != 200:
                        raise RuntimeError(f"{r.status_code}: {r.text}")
                    if r.json()["total"] >= 1:
                        out.append(time.perf_counter() - t0)
                        break
                    time.sleep(0.02)
                while c.get(f"/v1/studies/{study_id}").json()["state"] not in ("SUCCEEDED", "FAILED"):
                    time.sleep(0.1)
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--submits", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvlars-api-"))
    with fresh_pg_database() as db:
        t = time.perf_counter()
        study_id = seed_study(db, args.trials)
        print(f"seeded {args.trials} trials in {time.perf_counter() - t:.1f} s")
        server = start_server(db, tmp, workers=0, ready=False)
        try:
            paths = {
                "leaderboard": f"/v1/studies/{study_id}/leaderboard?limit=10",
                "study": f"/v1/studies/{study_id}",
                "trials page": f"/v1/studies/{study_id}/trials?limit=50&offset=5000",
            }
            _, warmup_errors = hammer(server.url, list(paths.values()), 2, 20)  # warm-up: connections, caches
            runs = {n: hammer(server.url, list(paths.values()), n, args.requests) for n in args.clients}
        finally:
            server.stop()
    if warmup_errors:
        print("warm-up:")
        print_errors(warmup_errors)
    for n, (lat, errors) in runs.items():
        print(f"{n} concurrent clients (threads of this process), {n * args.requests} requests, PostgreSQL, loopback:")
        for label, path in paths.items():
            p50, p95, p99 = percentiles(lat[path])
            print(f"  {label:12s} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  ({len(lat[path])} requests)")
        print_errors(errors)
    first = first_trial_latency(tmp, args.submits)
    print(
        f"submit -> first trial running (warm worker): median {statistics.median(first):.2f} s, "
        f"max {max(first):.2f} s (goal <= 3 s)"
    )
    most = max(runs)
    p95 = percentiles(runs[most][0][paths["leaderboard"]])[1]
    print(f"api_latency: {p95:.1f} ms leaderboard p95 at {args.trials} trials, {most} clients (goal <= 50)")
    if warmup_errors or any(errors for _, errors in runs.values()):
        sys.exit(1)  # figures with failed requests behind them are not a pass


if __name__ == "__main__":
    main()
