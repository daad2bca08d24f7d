"""Load: mixed reads and writes from concurrent clients against a real server on PostgreSQL, for a fixed time.

One study of 10 000 trials is seeded; the server runs without workers (submitted studies stay QUEUED, so the load
is the API's alone). Each client loops over a mix: leaderboard, study, trials page, the study list, a submit
(with an Idempotency-Key) and a cancel of what it submitted. Any answer other than the expected one is an error.

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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._seed import fresh_pg_database, seed_study  # noqa: E402
from tests.utils.server import WRITE_KEY, start_server  # noqa: E402
from tests.utils.specs import quick_spec  # noqa: E402


def run_client(url: str, study_id: str, stop: threading.Event, out: list[float], errors: list[str]) -> None:
    reads = [
        f"/v1/studies/{study_id}/leaderboard?limit=10",
        f"/v1/studies/{study_id}",
        f"/v1/studies/{study_id}/trials?limit=50&offset=2000",
        "/v1/studies?limit=20",
    ]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=30) as c:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 8 == 0:
                name = f"load-{uuid.uuid4().hex[:10]}"
                calls = [("POST", "/v1/studies", {"json": quick_spec(name), "headers": {"Idempotency-Key": name}}, 201)]
            else:
                calls = [("GET", reads[i % len(reads)], {}, 200)]
            for method, path, kwargs, expected in calls:
                t = time.perf_counter()
                r = c.request(method, path, **kwargs)
                out.append((time.perf_counter() - t) * 1e3)
                if r.status_code != expected:
                    errors.append(f"{r.status_code} {method} {path}")
                elif method == "POST":
                    t = time.perf_counter()
                    r = c.post(f"/v1/studies/{r.json()['id']}/cancel")
                    out.append((time.perf_counter() - t) * 1e3)
                    if r.status_code != 202:
                        errors.append(f"{r.status_code} cancel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvlars-load-"))
    with fresh_pg_database() as db:
        study_id = seed_study(db, args.trials)
        server = start_server(db, tmp, workers=0, ready=False)
        try:
            stop = threading.Event()
            latencies: list[float] = []
            errors: list[str] = []
            threads = [
                threading.Thread(target=run_client, args=(server.url, study_id, stop, latencies, errors))
                for _ in range(args.clients)
            ]
            for th in threads:
                th.start()
            time.sleep(args.seconds)
            stop.set()
            for th in threads:
                th.join()
        finally:
            server.stop()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"{args.clients} clients for {args.seconds:.0f} s: {len(latencies)} requests "
        f"({len(latencies) / args.seconds:.0f}/s), p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms"
    )
    if errors:
        print(f"errors, e.g.: {errors[:5]}")
    print(f"load: {q[98]:.0f} ms p99, {len(errors)} errors (goal <= 200)")


if __name__ == "__main__":
    main()
