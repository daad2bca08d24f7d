"""Optimizer step time: TVLARS, LARS and LAMB against torch's foreach SGD/AdamW and an official-style per-layer loop.

ResNet-18 CIFAR parameter shapes (62 tensors, 11.17M parameters), fixed gradients, 2 CPU threads; every contender
runs in interleaved rounds in one process and the median round counts. On a CUDA GPU it also checks that
``step()`` makes no host sync (``torch.cuda.set_sync_debug_mode("error")``) and times ResNet-50 shapes.

    python benchmarks/optimizer_step.py [--rounds 15] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo root holds tvlars

from tvlars import LAMB, LARS, TVLARS  # noqa: E402
from tvlars.models import resnet18, resnet50  # noqa: E402
from tvlars.testing.official import OfficialTVLARS  # noqa: E402


def make_params(model_fn: Callable, device: str) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [p.to(device) for p in model_fn(num_classes=10).parameters()]
    params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def contenders(model_fn: Callable, device: str, official: bool) -> dict[str, Callable[[], None]]:
    lr = 1e-3  # small, so that thousands of steps keep the numbers finite and every kernel does the same work
    built = {
        "sgd_foreach": torch.optim.SGD(
            make_params(model_fn, device), lr=lr, momentum=0.9, weight_decay=5e-4, foreach=True
        ),
        "sgd_forloop": torch.optim.SGD(
            make_params(model_fn, device), lr=lr, momentum=0.9, weight_decay=5e-4, foreach=False
        ),
        "adamw_foreach": torch.optim.AdamW(make_params(model_fn, device), lr=lr, foreach=True),
        "tvlars_foreach": TVLARS(make_params(model_fn, device), lr=lr, foreach=True),
        "tvlars_forloop": TVLARS(make_params(model_fn, device), lr=lr, foreach=False),
        "tvlars_fused": TVLARS(make_params(model_fn, device), lr=lr, fused=True),
        "lars_foreach": LARS(make_params(model_fn, device), lr=lr, foreach=True),
        "lars_fused": LARS(make_params(model_fn, device), lr=lr, fused=True),
        "lamb_foreach": LAMB(make_params(model_fn, device), lr=lr, foreach=True),
        "lamb_fused": LAMB(make_params(model_fn, device), lr=lr, fused=True),
    }
    if official:
        built["official_loop"] = OfficialTVLARS(make_params(model_fn, device), lr=lr)
    return {name: opt.step for name, opt in built.items()}


def measure(steps: dict[str, Callable[[], None]], rounds: int, n: int, sync: Callable[[], None]) -> dict[str, float]:
    for step in steps.values():  # warm up: state creation, compilation
        for _ in range(3):
            step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(v) * 1e3 for name, v in times.items()}


def report(ms: dict[str, float], label: str) -> None:
    print(f"\n[{label}] median ms per step")
    for name, value in sorted(ms.items(), key=lambda kv: kv[1]):
        print(f"  {name:16s} {value:8.2f}")
    sgd, adamw = ms["sgd_foreach"], ms["adamw_foreach"]
    print(
        f"  TVLARS/SGD-foreach: fused {ms['tvlars_fused'] / sgd:.2f}x, foreach {ms['tvlars_foreach'] / sgd:.2f}x, "
        f"for-loop {ms['tvlars_forloop'] / sgd:.2f}x"
    )
    print(
        f"  TVLARS/SGD-for-loop (torch's CPU default): fused {ms['tvlars_fused'] / ms['sgd_forloop']:.2f}x, "
        f"for-loop {ms['tvlars_forloop'] / ms['sgd_forloop']:.2f}x"
    )
    print(f"  LARS/SGD-foreach:   fused {ms['lars_fused'] / sgd:.2f}x, foreach {ms['lars_foreach'] / sgd:.2f}x")
    print(f"  LAMB/AdamW-foreach: fused {ms['lamb_fused'] / adamw:.2f}x, foreach {ms['lamb_foreach'] / adamw:.2f}x")
    if "official_loop" in ms:
        print(
            f"  speed-up over the official per-layer loop: fused {ms['official_loop'] / ms['tvlars_fused']:.1f}x, "
            f"foreach {ms['official_loop'] / ms['tvlars_foreach']:.1f}x"
        )


def count_host_syncs(device: str) -> int:
    """Steps of each optimizer under sync-debug 'error' mode; returns how many raised (0 = no host sync)."""
    failures = 0
    for opt in (
        TVLARS(make_params(resnet50, device), lr=1e-3),
        TVLARS(make_params(resnet50, device), lr=1e-3, fused=True),
        LARS(make_params(resnet50, device), lr=1e-3),
        LAMB(make_params(resnet50, device), lr=1e-3),
    ):
        opt.step()  # first step creates state (allocations are fine, but keep them out of the check)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                opt.step()
        except RuntimeError as e:
            failures += 1
            print(f"  host sync in {type(opt).__name__}: {e}")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per contender per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_params = sum(p.numel() for p in resnet18().parameters())
    print(f"ResNet-18 CIFAR shapes: {len(list(resnet18().parameters()))} tensors, {n_params / 1e6:.2f}M params")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} interleaved rounds x {args.steps} steps")

    cpu = measure(contenders(resnet18, "cpu", official=True), args.rounds, args.steps, lambda: None)
    report(cpu, "cpu, ResNet-18")

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        gpu = measure(contenders(resnet50, "cuda", official=True), args.rounds, args.steps * 4, torch.cuda.synchronize)
        report(gpu, f"{name}, ResNet-50")
        syncs = count_host_syncs("cuda")
        print(f"  host syncs inside step() on {name}: {'none' if syncs == 0 else f'{syncs} optimizers synced'}")
        print(f"optimizer_step (gpu): {gpu['tvlars_fused'] / gpu['sgd_foreach']:.2f}x TVLARS/SGD-foreach (goal <= 1.0)")

    print(f"optimizer_step: {cpu['tvlars_fused'] / cpu['sgd_foreach']:.2f}x TVLARS/SGD-foreach (goal <= 1.0)")


if __name__ == "__main__":
    main()
