"""Load: mixed reads and writes from concurrent clients against a real server on PostgreSQL, for a fixed time.

One study of 10 000 trials is seeded; the server runs without workers (submitted studies stay QUEUED, so the load
is the API's alone). Each client loops over a mix: leaderboard, study, trials page, the study list, a submit
(with an Idempotency-Key) and a cancel of what it submitted. Any answer other than the expected one is an error, and
so is a call that raised (a timeout, a dropped connection): it counts, by kind, and its client goes on. Latencies
include failed calls (the time until they failed), so timeouts show in the percentiles.

    python benchmarks/load.py [--clients 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._seed import fresh_pg_database, seed_study  # noqa: E402
from tests.utils.server import WRITE_KEY, start_server  # noqa: E402
from tests.utils.specs import quick_spec  # noqa: E402


def run_client(url: str, study_id: str, stop: threading.Event) -> tuple[list[float], Counter]:
    """One client's loop until ``stop``: its latencies, and its failed calls (wrong status or an exception) by kind."""
    out: list[float] = []
    errors: Counter = Counter()
    reads = [
        ("leaderboard", f"/v1/studies/{study_id}/leaderboard?limit=10"),
        ("study", f"/v1/studies/{study_id}"),
        ("trials page", f"/v1/studies/{study_id}/trials?limit=50&offset=2000"),
        ("study list", "/v1/studies?limit=20"),
    ]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30) as c:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 8 == 0:
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
    c: httpx.Client, out: list[float], errors: Counter, label: str, method: str, path: str, expected: int, **kwargs
) -> httpx.Response | None:
    """One call: its latency (until the answer, or until it failed) and, unless it answered ``expected``, an error."""
    t = time.perf_counter()
    try:
        r = c.request(method, path, **kwargs)
    except httpx.HTTPError as e:  # a timeout or a dropped connection is an error, never a silently dead client
        out.append((time.perf_counter() - t) * 1e3)
        errors[f"{type(e).__name__} ({label})"] += 1
        return None
    out.append((time.perf_counter() - t) * 1e3)
    if r.status_code != expected:
        errors[f"HTTP {r.status_code} ({label})"] += 1
        return None
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvlars-load-"))
    latencies: list[float] = []
    errors: Counter = Counter()
    with fresh_pg_database() as db:
        study_id = seed_study(db, args.trials)
        server = start_server(db, tmp, workers=0, ready=False)
        try:
            stop = threading.Event()
            with ThreadPoolExecutor(max_workers=args.clients, thread_name_prefix="client") as pool:
                futures = [pool.submit(run_client, server.url, study_id, stop) for _ in range(args.clients)]
                time.sleep(args.seconds)
                stop.set()
                for f in as_completed(futures):
                    if (e := f.exception()) is not None:  # a client that died of anything else: one error, by kind
                        errors[f"client died: {type(e).__name__}: {e}"] += 1
                        continue
                    out, errs = f.result()
                    latencies += out
                    errors += errs
        finally:
            server.stop()
    n_errors = sum(errors.values())
    if latencies:
        q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    else:
        q = [float("nan")] * 99
    ok = len(latencies) - sum(n for kind, n in errors.items() if not kind.startswith("client died"))
    print(
        f"{args.clients} clients for {args.seconds:.0f} s: {len(latencies)} requests, {ok} answered as expected "
        f"({ok / args.seconds:.0f}/s), p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms"
    )
    if errors:
        print(f"{n_errors} errors by kind:")
        for kind, n in errors.most_common():
            print(f"  {n:6d}  {kind}")
    print(f"load: {q[98]:.0f} ms p99, {n_errors} errors (goal <= 200)")


if __name__ == "__main__":
    main()
