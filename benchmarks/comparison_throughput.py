"""How much of a comparison's wall time the trainer spends training: ``compare-quick`` through the real server.

Runs ``tvlars-tune serve`` (on a loopback port, SQLite in a temp folder) with 1 and then 2 workers, submits the
``compare-quick`` preset, waits for it to finish and reads back from the server's own storage:

- ``wall``: the first claim of one of its studies (a worker ready, its Ray started) to its last study's end;
- ``Σ train``: every trial's ``train_seconds``, the time the trainer spent in its epochs (training + evaluation,
  not data loading); ``Σ wall_seconds`` (the trials' own time, data loading and imports included) beside it;
- ``wall × workers / Σ train``: 1.00 would mean every worker trained all the time;
- per study: its start-up (its first trial's start minus the claim of the study), and the idle gaps between one
  trial's end and the next trial's start on the same worker. Optuna's trial start is when the trial was asked
  for; Ray Tune asks before it starts the trial's actor, so each is also given to the trial's own function
  starting (its end less its ``wall_seconds``), where the actor's start-up shows;
- every failure: trials FAIL, studies not SUCCEEDED, the comparison not SUCCEEDED.

``--from-db DB...`` reports runs already made from their ``tune.db`` (kept in ``/tmp/tvlars-cmp-bench-*``).
``--checkout DIR`` runs another checkout's server (e.g. the code before a change) with the Python running this
script: ``cd OTHER && .venv/bin/python /path/to/benchmarks/comparison_throughput.py --checkout .``. A checkout whose
trials record no ``train_seconds`` is measured against ``Σ wall_seconds`` only (said so in its lines).

Last line: ``comparison_throughput: X.XXx wall / trials' training seconds, compare-quick, 1 worker (goal <= 1.15)``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

GOALS = {1: 1.15, 2: 1.25}
STARTUP_GOAL_S = 0.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _service_time(text: str | None) -> float | None:
    """A service timestamp (stored in UTC) as epoch seconds."""
    if text is None:
        return None
    t = datetime.fromisoformat(str(text))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _optuna_time(text: str | None) -> float | None:
    """An Optuna timestamp (stored in the machine's local time) as epoch seconds."""
    return None if text is None else datetime.fromisoformat(str(text)).timestamp()


def run_once(checkout: Path, workers: int, preset: str, timeout_s: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"tvlars-cmp-bench-{workers}w-"))
    db = folder / "tune.db"
    port = _free_port()
    env = {
        **os.environ,
        "TVLARS_DATABASE_URL": f"sqlite:///{db}",
        "TVLARS_RAY_RESULTS_DIR": str(folder / "ray"),
        "PYTHONPATH": str(checkout),
    }
    env.pop("RAY_ADDRESS", None)  # a local Ray of the server's own
    log = open(folder / "server.log", "wb")
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # the API and the workers (Ray started) ready
            try:
                code, body = _http("GET", base + "/readyz")
                if code == 200 and body.get("workers", 0) >= workers:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready; see {folder / 'server.log'}")
            time.sleep(0.5)
        time.sleep(1.0)
        submitted = time.time()
        code, body = _http("POST", base + "/v1/comparisons", {"preset": preset, "name": f"bench-{workers}w"})
        if code not in (200, 201):
            raise RuntimeError(f"submit answered {code}: {body}")
        cid = body["id"]
        deadline = time.monotonic() + timeout_s
        state = body.get("state")
        while state not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            if time.monotonic() > deadline or proc.poll() is not None:
                state = f"not finished ({state}) after {timeout_s:.0f} s"
                break
            time.sleep(0.5)
            code, body = _http("GET", f"{base}/v1/comparisons/{cid}")
            state = body.get("state")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {"workers": workers, "submitted": submitted, "state": state, **read_storage(db, cid), "folder": folder}


def read_storage(db: Path, comparison_id: str) -> dict:
    con = sqlite3.connect(db)
    studies = con.execute(
        "SELECT name, state, worker_id, started_at, finished_at FROM tvlars_studies WHERE comparison_id = ?",
        (comparison_id,),
    ).fetchall()
    trials = con.execute(
        "SELECT s.study_name, t.trial_id, t.state, t.datetime_start, t.datetime_complete "
        "FROM trials t JOIN studies s ON s.study_id = t.study_id"
    ).fetchall()
    attrs: dict[int, dict] = {}
    for trial_id, key, value in con.execute(
        "SELECT trial_id, key, value_json FROM trial_user_attributes WHERE key IN ('train_seconds', 'wall_seconds')"
    ):
        attrs.setdefault(trial_id, {})[key] = json.loads(value)
    con.close()
    by_study = {
        name: (state, worker, _service_time(start), _service_time(end)) for name, state, worker, start, end in studies
    }
    rows = []
    for study, trial_id, tstate, start, end in trials:
        if study not in by_study:
            continue
        rows.append(
            {
                "study": study,
                "state": tstate,
                "worker": by_study[study][1],
                "start": _optuna_time(start),
                "end": _optuna_time(end),
                **attrs.get(trial_id, {}),
            }
        )
    for r in rows:  # when the trial's own function started (its end less its wall_seconds)
        r["began"] = r["end"] - r["wall_seconds"] if r["end"] and r.get("wall_seconds") is not None else None
    startups, to_function = [], []
    for name, (_, _, claimed, _) in by_study.items():
        mine = [r for r in rows if r["study"] == name and r["start"] is not None]
        if claimed is not None and mine:
            first = min(mine, key=lambda r: r["start"])
            startups.append(first["start"] - claimed)
            if first["began"] is not None:
                to_function.append(first["began"] - claimed)
    gaps, function_gaps = [], []
    for worker in {r["worker"] for r in rows}:
        mine = sorted((r for r in rows if r["worker"] == worker and r["start"] and r["end"]), key=lambda r: r["start"])
        gaps += [b["start"] - a["end"] for a, b in zip(mine, mine[1:], strict=False)]
        function_gaps += [b["began"] - a["end"] for a, b in zip(mine, mine[1:], strict=False) if b["began"]]
    ends = [end for *_, end in by_study.values() if end is not None]
    claims = [claimed for _, _, claimed, _ in by_study.values() if claimed is not None]
    return {
        "studies": len(by_study),
        "studies_not_succeeded": sum(1 for s in by_study.values() if s[0] != "SUCCEEDED"),
        "trials": len(rows),
        "trials_failed": sum(1 for r in rows if r["state"] != "COMPLETE"),
        "train_s": sum(r.get("train_seconds") or 0.0 for r in rows),
        "has_train_seconds": all("train_seconds" in r for r in rows if r["state"] == "COMPLETE"),
        "wall_seconds_s": sum(r.get("wall_seconds") or 0.0 for r in rows),
        "last_end": max(ends) if ends else None,
        "first_claim": min(claims) if claims else None,
        "startups": startups,
        "to_function": to_function,
        "gaps": gaps,
        "function_gaps": function_gaps,
    }


def report(r: dict) -> float:
    """Print one run's figures; returns its headline ratio."""
    n = r["workers"]
    # from the first claim (a worker's Ray is up) to the last study's end
    wall = (r["last_end"] or time.time()) - (r["first_claim"] or r["submitted"])
    denominator = r["train_s"] if r["has_train_seconds"] else r["wall_seconds_s"]
    ratio = wall * n / denominator if denominator else float("inf")
    s, g = r["startups"], r["gaps"]
    failures = r["trials_failed"] + r["studies_not_succeeded"] + (r["state"] != "SUCCEEDED")
    print(f"--- {n} worker(s): comparison {r['state']}, {r['studies']} studies, {r['trials']} trials")
    print(
        f"  wall {wall:.1f} s; Σ train_seconds {r['train_s']:.1f} s; Σ trials' wall_seconds {r['wall_seconds_s']:.1f} s"
    )
    if not r["has_train_seconds"]:
        print("  (this checkout records no train_seconds: the ratio below uses the trials' wall_seconds)")
    print(
        f"  wall x workers / Σ {'train' if r['has_train_seconds'] else 'wall'}_seconds = {ratio:.2f}x"
        f" (wall x workers / Σ wall_seconds = {wall * n / max(r['wall_seconds_s'], 1e-9):.2f}x)"
    )
    if s:
        print(
            f"  start-up per study: median {statistics.median(s):.2f} s, mean {statistics.mean(s):.2f} s, "
            f"max {max(s):.2f} s (goal <= {STARTUP_GOAL_S})"
        )
    if r["to_function"]:
        f = r["to_function"]
        print(
            f"  claim to the first trial's function starting: median {statistics.median(f):.2f} s, "
            f"mean {statistics.mean(f):.2f} s, max {max(f):.2f} s (Ray Tune asks before its actor starts)"
        )
    if g:
        print(
            f"  idle gaps between trials: median {statistics.median(g):.2f} s, mean {statistics.mean(g):.2f} s, "
            f"max {max(g):.2f} s, total {sum(g):.1f} s over {len(g)}"
        )
    if r["function_gaps"]:
        fg = r["function_gaps"]
        print(
            f"  a trial's end to the next trial's function starting: median {statistics.median(fg):.2f} s, "
            f"mean {statistics.mean(fg):.2f} s, total {sum(fg):.1f} s"
        )
    print(
        f"  failures: {failures} ({r['trials_failed']} trials not COMPLETE, {r['studies_not_succeeded']} studies "
        f"not SUCCEEDED, comparison {r['state']}); server log {r['folder'] / 'server.log'}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkout",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the checkout whose server runs (default: this one)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--preset", default="compare-quick")
    parser.add_argument("--from-db", type=Path, nargs="+", help="report runs already made: their tune.db files")
    parser.add_argument("--timeout-s", type=float, default=1800, help="per run (a busy machine is slow)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    if args.from_db:
        for db in args.from_db:
            (cid, n), *_ = sqlite3.connect(db).execute(
                "SELECT c.id, COUNT(DISTINCT s.worker_id) FROM tvlars_comparisons c "
                "JOIN tvlars_studies s ON s.comparison_id = c.id GROUP BY c.id"
            )
            (state,), *_ = sqlite3.connect(db).execute("SELECT state FROM tvlars_comparisons WHERE id = ?", (cid,))
            workers = int(db.parent.name.split("-")[3].rstrip("w"))  # tvlars-cmp-bench-Nw-*
            print(f"{db} ({n} worker ids ran studies)")
            report({"workers": workers, "submitted": 0.0, "state": state, **read_storage(db, cid), "folder": db.parent})
        return
    checkout = args.checkout.resolve()
    commit = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()
    print(f"checkout {checkout} ({commit}), python {sys.executable}, {os.cpu_count()} CPUs")
    ratios = {n: report(run_once(checkout, n, args.preset, args.timeout_s)) for n in args.workers}
    for n in sorted(ratios, reverse=True):
        if n != 1:
            print(
                f"comparison_throughput: {ratios[n]:.2f}x wall x {n} workers / trials' training seconds, "
                f"{args.preset}, {n} workers (goal <= {GOALS.get(n, 1.25)})"
            )
    if 1 in ratios:
        print(
            f"comparison_throughput: {ratios[1]:.2f}x wall / trials' training seconds, {args.preset}, 1 worker "
            f"(goal <= {GOALS[1]})"
        )


if __name__ == "__main__":
    main()
