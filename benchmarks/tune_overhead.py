"""Engine overhead: a study through the engine (Ray Tune + Optuna storage) vs the same trials in a process pool.

16 short MNIST-1D trials (about 0.8 s of training each), 2 at a time, 1 CPU each, on both sides. The pool is
``concurrent.futures.ProcessPoolExecutor`` with fresh (spawned) processes, created inside the timed region as the
engine's Tune actors are; Ray itself is started once beforehand, as a long-running worker keeps it. Rounds alternate
pool, engine, pool, engine...; the headline is the median of each round's engine/pool ratio.

    python benchmarks/tune_overhead.py [--trials 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_spaces.spec import StudySpec  # noqa: E402
from service.engine import ensure_ray, run_study  # noqa: E402

WORKLOAD = {"task": "classification", "dataset": "mnist1d", "model": "mlp", "epochs": 8, "batch_size": 250}


def spec_for(trials: int, concurrency: int) -> dict:
    return {
        "name": f"overhead-{uuid.uuid4().hex[:8]}",
        "workload": WORKLOAD,
        "optimizer": "tvlars",
        "search_space": {"lr": {"type": "float", "low": 2.0, "high": 10.0, "log": True}},
        "sampler": {"name": "random", "seed": 0},
        "scheduler": {"name": "none"},
        "budget": {"n_trials": trials, "max_concurrent": concurrency, "max_failed": 0},
        "resources": {"cpu": 1, "gpu": 0},
    }


def _pool_trial(config: dict) -> float:
    from tvlars.train import run

    return run(config)["test_acc"]


def run_pool(trials: int, concurrency: int, start_method: str = "spawn") -> float:
    spec = StudySpec.model_validate(spec_for(trials, concurrency))
    configs = [
        spec.trial_config({"lr": 2.0 + 8.0 * i / trials}, trial_seed=i) | {"num_threads": 1} for i in range(trials)
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(concurrency, mp_context=mp.get_context(start_method)) as pool:
        accs = list(pool.map(_pool_trial, configs))
    assert len(accs) == trials
    return time.perf_counter() - start


def run_engine(trials: int, concurrency: int, storage_url: str) -> float:
    start = time.perf_counter()
    outcome = run_study(spec_for(trials, concurrency), storage_url)
    elapsed = time.perf_counter() - start
    assert outcome.state == "SUCCEEDED" and outcome.n_complete == trials, outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvlars-overhead-"))
    storage_url = f"sqlite:///{tmp / 'studies.db'}"
    t = time.perf_counter()
    ensure_ray()
    print(f"ray start (excluded from the rounds): {time.perf_counter() - t:.1f} s")
    ratios, fork_ratios = [], []
    for r in range(args.rounds):
        pool_s = run_pool(args.trials, args.concurrency)
        engine_s = run_engine(args.trials, args.concurrency, storage_url)
        fork_s = run_pool(args.trials, args.concurrency, "fork")
        ratios.append(engine_s / pool_s)
        fork_ratios.append(engine_s / fork_s)
        per_trial = (engine_s - pool_s) / args.trials
        print(
            f"round {r + 1}: spawn pool {pool_s:.2f} s, engine {engine_s:.2f} s, ratio {engine_s / pool_s:.2f}x "
            f"({per_trial * 1e3:+.0f} ms per trial); fork pool {fork_s:.2f} s, ratio {engine_s / fork_s:.2f}x"
        )
    print(
        f"against a fork pool (children inherit the imported torch, so pay no start-up): "
        f"{statistics.median(fork_ratios):.2f}x"
    )
    print(f"tune_overhead: {statistics.median(ratios):.2f}x engine/plain loop (goal <= 1.15)")


if __name__ == "__main__":
    main()
