"""The one GPU check: correctness, host syncs, trial speed, optimizer step and packing of trials on a CUDA GPU.

Needs torch (+ numpy) and this repository only; torchvision, where installed, builds the official-style input
pipeline (without it that comparison is skipped, and says so). Every section is timed and skipped, with the reason,
when the remaining ``--budget-s`` is shorter than it needs; ``DIR/gpu.json`` and ``DIR/gpu.md`` are rewritten as each
section finishes, so a run that is killed keeps what it measured. The last line printed is the headline.

Sections (``docs/results/gpu.md`` says what each figure means and the goals):
    correctness     TVLARS, LARS, LAMB single-tensor/foreach/fused on the device against the float64 CPU reference
    step_syncs      host syncs inside ``step()`` (``torch.cuda.set_sync_debug_mode``), ResNet-18 shapes
    trial_syncs     host syncs per epoch of a ResNet-18 trial (``tvlars.train.run``), by source line
    trial_speed     ResNet-18 on CIFAR-10-shaped synthetic uint8 data, batch 512/4096/32768, fp32 and bf16: ours
                    against an official-style pipeline (torchvision DataLoader + the official per-layer optimizer)
    data_share      time spent producing batches, as a share of the step time
    mfu             model FLOPs utilisation from FLOPs measured by ``torch.utils.flop_counter.FlopCounterMode``
    optimizer_step  TVLARS foreach/fused against torch SGD foreach/fused and AdamW fused, ResNet-18/50 shapes
    packing         1, 2 and 4 trial processes sharing the GPU, each with its own CUDA context

    python benchmarks/gpu.py --out DIR                 # a CUDA GPU, <= 6 minutes (--budget-s 360)
    python benchmarks/gpu.py --dry-run --out DIR       # CPU, tiny shapes, every section's code in seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a bare copy of the repository runs this without installing anything

from benchmarks.optimizer_step import make_params, measure  # noqa: E402
from benchmarks.trainer_throughput import MEAN, STD, ours_data_seconds  # noqa: E402
from tvlars import LAMB, LARS, TVLARS  # noqa: E402
from tvlars.data import load_dataset  # noqa: E402
from tvlars.models import build_model, resnet18, resnet50  # noqa: E402
from tvlars.testing.cases import ALL_INPUTS, run_case  # noqa: E402
from tvlars.testing.official import OfficialTVLARS  # noqa: E402
from tvlars.train import run  # noqa: E402

#: Dense tensor-core peaks (TFLOP/s) from the vendors' datasheets: (bf16, tf32). The first name contained wins.
PEAK_TFLOPS = {
    "H200": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100 NVL": (835.0, 418.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
}
#: The goals of issue 20: figure, comparison, goal, how it prints, what it is.
GOALS = [
    ("vs_official", ">=", 3.0, "{:.1f}x", "images/s, ours over the official-style pipeline (bf16, middle batch size)"),
    ("epoch_s", "<=", 0.8, "{:.2f} s", "seconds per 50 000-image bf16 ResNet-18 epoch (middle batch size)"),
    ("data_share", "<=", 0.05, "{:.1%}", "data time over step time, ours (bf16, middle batch size)"),
    ("fused_vs_sgd", "<=", 1.0, "{:.2f}x", "fused TVLARS step time over torch fused SGD's (ResNet-18 shapes)"),
    ("syncs_per_step", "<=", 0, "{:g}", "host syncs per optimizer step(), worst optimizer and path"),
]
SYNC_MESSAGE = "synchronizing CUDA operation"  # what torch's sync-debug mode says at each host sync
#: Parameters closer than this to the float64 CPU reference after 6 float64 steps match (the tolerance of
#: tests/unit/tvlars/optim).
RTOL, ATOL = 1e-9, 1e-10


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: the real ones on a GPU, tiny ones for the CPU dry run."""

    images: int  # training images of the trial-speed data set
    image_size: int
    batch_sizes: tuple[int, ...]
    micro_batch: int  # larger batches accumulate gradients over micro-batches of this size, in both pipelines
    test_images: int
    loader_workers: int
    sync_trial_images: int
    sync_trial_batch: int
    optimizer_models: tuple[Callable[..., torch.nn.Module], ...]
    optimizer_rounds: int
    optimizer_steps: int
    packing_levels: tuple[int, ...]
    packing_trial: dict[str, Any] = field(default_factory=dict)
    #: seconds each section needs at this scale; it is skipped when less of the budget is left
    needs: dict[str, float] = field(default_factory=dict)


GPU_SCALE = Scale(
    images=50_000,
    image_size=32,
    batch_sizes=(512, 4096, 32768),
    micro_batch=8192,  # ~50 GB of fp32 ResNet-18 activations; the official runs split 32768 over 4 GPUs too
    test_images=1000,
    loader_workers=min(16, os.cpu_count() or 1),
    sync_trial_images=10_000,
    sync_trial_batch=512,
    optimizer_models=(resnet18, resnet50),
    optimizer_rounds=10,
    optimizer_steps=20,
    packing_levels=(1, 2, 4),
    packing_trial={"n_train": 10_000, "batch_size": 512, "epochs": 2},
    needs={
        "correctness": 60,
        "step_syncs": 30,
        "trial_syncs": 20,
        "trial_speed": 15,  # per batch size and precision
        "data_share": 5,
        "mfu": 5,
        "optimizer_step": 40,
        "packing": 25,  # per level
    },
)
DRY_SCALE = Scale(
    images=32,
    image_size=4,
    batch_sizes=(4, 8, 16),
    micro_batch=8,
    test_images=16,
    loader_workers=1,
    sync_trial_images=128,
    sync_trial_batch=32,
    optimizer_models=(resnet18,),
    optimizer_rounds=2,
    optimizer_steps=1,
    packing_levels=(1, 2),
    packing_trial={"n_train": 32, "batch_size": 16, "epochs": 1},
    needs={
        "correctness": 2,
        "step_syncs": 1,
        "trial_syncs": 1,
        "trial_speed": 1,
        "data_share": 1,
        "mfu": 1,
        "optimizer_step": 3,
        "packing": 5,
    },
)


class Skip(Exception):
    """A section (or one row of it) that cannot run here; the message says why."""


@dataclass
class Context:
    device: torch.device
    dry_run: bool
    scale: Scale
    deadline: float
    data: dict[str, Any] = field(default_factory=dict)  # results later sections read (trial speeds, FLOPs)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check_budget(self, name: str) -> None:
        need = self.scale.needs[name]
        if self.left() < need:
            raise Skip(f"budget: {max(self.left(), 0):.0f} s left, this needs ~{need:.0f} s")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@dataclass
class SectionResult:
    summary: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)


# --- host syncs -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sync_debug(mode: str) -> Iterator[None]:
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised in the block, with sync-debug "warn" mode on: each host sync is one warning."""
    with warnings.catch_warnings(record=True) as caught, sync_debug("warn"):
        warnings.simplefilter("always")
        yield caught


def sync_sources(caught: list[warnings.WarningMessage]) -> list[str]:
    """``file:line`` of each host sync among ``caught``."""
    return [f"{Path(w.filename).name}:{w.lineno}" for w in caught if SYNC_MESSAGE in str(w.message)]


def top_sources(where: list[str], n: int = 4) -> str:
    return ", ".join(f"{place} x{count}" for place, count in Counter(where).most_common(n)) or "-"


# --- sections ---------------------------------------------------------------------------------------------------


def correctness(ctx: Context) -> SectionResult:
    out = SectionResult()
    impls = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    for case, inp in ALL_INPUTS:
        reference, _ = run_case(case, inp, {"foreach": False}, device="cpu")
        for impl_name, impl in impls.items():
            if impl_name == "fused" and not inp.fused:
                continue  # the case table marks the inputs the compiled path is checked on (each compile costs)
            row = {"optimizer": case.name, "input": inp.desc, "impl": impl_name}
            if impl_name == "fused" and ctx.dry_run:
                out.rows.append({**row, "max abs error": "-", "match": "skipped: compiling on a CPU takes ~1 min"})
                continue
            model, _ = run_case(case, inp, impl, device=str(ctx.device))
            error = max(
                (b.detach().cpu() - a.detach()).abs().max().item() if a.numel() else 0.0
                for a, b in zip(reference.parameters(), model.parameters(), strict=True)
            )
            match = all(
                torch.allclose(b.detach().cpu(), a.detach(), rtol=RTOL, atol=ATOL)
                for a, b in zip(reference.parameters(), model.parameters(), strict=True)
            )
            out.rows.append({**row, "max abs error": f"{error:.1e}", "match": "yes" if match else "NO"})
            if not match:
                out.failed_checks.append(f"correctness: {case.name} {inp.desc} {impl_name} on {ctx.device}")
    checked = [r for r in out.rows if r["match"] in ("yes", "NO")]
    matched = sum(r["match"] == "yes" for r in checked)
    out.summary.append(
        f"{matched} of {len(checked)} runs on {ctx.device} match the float64 CPU reference "
        f"(6 float64 steps of tvlars.testing's TinyNet, rtol {RTOL:g}, atol {ATOL:g})"
    )
    out.figures["matched"], out.figures["checked"] = matched, len(checked)
    return out


def step_syncs(ctx: Context) -> SectionResult:
    if not ctx.cuda:
        raise Skip("no CUDA (host syncs are a CUDA notion; tests/unit/tvlars/optim checks the CPU paths)")
    out = SectionResult()
    worst = 0.0
    for cls in (TVLARS, LARS, LAMB):
        for impl_name, impl in (
            ("single", {"foreach": False}),
            ("foreach", {"foreach": True}),
            ("fused", {"fused": True}),
        ):
            opt = cls(make_params(resnet18, "cuda"), lr=1e-3, **impl)
            warm_up = time.perf_counter()
            for _ in range(2):  # state creation and compilation stay outside the check
                opt.step()
            torch.cuda.synchronize()
            warm_up = time.perf_counter() - warm_up
            with recorded_warnings() as caught:
                for _ in range(3):
                    opt.step()
            torch.cuda.synchronize()
            where = sync_sources(caught)
            raised = "-"
            with sync_debug("error"):
                try:
                    opt.step()
                except RuntimeError as e:
                    raised = str(e).splitlines()[0][:80]
            torch.cuda.synchronize()
            per_step = len(where) / 3
            worst = max(worst, per_step)
            out.rows.append(
                {
                    "optimizer": cls.__name__,
                    "impl": impl_name,
                    "first 2 steps s": f"{warm_up:.1f}",
                    "host syncs per step": f"{per_step:g}",
                    "error mode raised": raised,
                    "at": top_sources(where),
                }
            )
            if per_step > 0 or raised != "-":
                out.failed_checks.append(f"step_syncs: {cls.__name__} {impl_name} syncs the host")
    out.figures["syncs_per_step"] = worst
    out.summary.append(f"most host syncs per step() of any optimizer and path: {worst:g} (goal 0)")
    return out


def trial_syncs(ctx: Context) -> SectionResult:
    if not ctx.cuda:
        raise Skip("no CUDA (host syncs are a CUDA notion)")
    scale = ctx.scale
    marks: list[int] = []
    rows: list[dict[str, Any]] = []
    config = {
        "dataset": "synthetic",
        "dataset_options": {
            "n_train": scale.sync_trial_images,
            "n_test": scale.test_images,
            "image_size": scale.image_size,
        },
        "model": "resnet18",
        "batch_size": scale.sync_trial_batch,
        "epochs": 2,
        "lr": 1.0,
        "rotation": 15.0,
        "checkpoint_every": 0,
    }
    with recorded_warnings() as caught:

        def report(row: dict[str, Any]) -> None:
            rows.append(row)
            marks.append(len(caught))

        run(config, report)
    out = SectionResult()
    previous = 0
    for row, mark in zip(rows, marks, strict=True):
        epoch_where = sync_sources(caught[previous:mark])
        steps = row["step"] - (rows[row["epoch"] - 2]["step"] if row["epoch"] > 1 else 0)
        out.rows.append(
            {
                "epoch": row["epoch"],
                "steps": steps,
                "host syncs": len(epoch_where),
                "note": "includes the set-up before epoch 1" if row["epoch"] == 1 else "training + evaluation + report",
                "at": top_sources(epoch_where),
            }
        )
        previous = mark
    last = out.rows[-1]
    out.figures["syncs_per_epoch"] = last["host syncs"]
    out.figures["steps_per_epoch"] = last["steps"]
    out.summary.append(
        f"epoch {last['epoch']}: {last['host syncs']} host syncs over {last['steps']} steps "
        "(goal: the once-per-epoch report's transfer only)"
    )
    return out


class _OfficialStyleImages(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) arrays served as PIL images through torchvision transforms, as torchvision's CIFAR10."""

    def __init__(self, x, y, transform) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i].transpose(1, 2, 0))), int(self.y[i])


def _torchvision_missing() -> str | None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return "torchvision is not installed: no official-style pipeline to compare with"
    return None


def _official_loader(ctx: Context, data, batch_size: int):
    from torchvision import transforms as T

    size = ctx.scale.image_size
    transform = T.Compose(  # the official code's CIFAR training transforms
        [
            T.RandomCrop(size, padding=4),
            T.RandomHorizontalFlip(),
            T.RandomRotation(15),
            T.ToTensor(),
            T.Normalize(MEAN.tolist(), STD.tolist()),
        ]
    )
    return torch.utils.data.DataLoader(
        _OfficialStyleImages(data.train_x, data.train_y, transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=ctx.scale.loader_workers,
        pin_memory=ctx.cuda,  # workers start anew each epoch, the DataLoader's default (and none outlive it)
    )


def _autocast(ctx: Context, precision: str):
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def official_style_speed(ctx: Context, data, batch_size: int, precision: str, epochs: int) -> dict[str, float]:
    """Images/s and data share of the official loop: DataLoader batches, per-layer optimizer with ``.item()``."""
    loader = _official_loader(ctx, data, batch_size)
    torch.manual_seed(0)
    model = build_model("resnet18", (3, ctx.scale.image_size, ctx.scale.image_size), 10).to(ctx.device)
    opt = OfficialTVLARS(model.parameters(), lr=0.1)
    speeds, shares = [], []
    for _ in range(epochs):
        ctx.sync()
        waited, images = 0.0, 0
        start = tick = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(ctx.device, non_blocking=True), yb.to(ctx.device, non_blocking=True)
            waited += time.perf_counter() - tick
            model.zero_grad(set_to_none=True)
            for xc, yc in zip(xb.split(ctx.scale.micro_batch), yb.split(ctx.scale.micro_batch), strict=True):
                with _autocast(ctx, precision):
                    loss = F.cross_entropy(model(xc).float(), yc) * (len(xc) / len(xb))
                loss.backward()
            opt.step()  # reads every layer's ratio and norms back to the host, as the official code logs them
            images += len(xb)
            tick = time.perf_counter()
        ctx.sync()
        seconds = time.perf_counter() - start
        speeds.append(images / seconds)
        shares.append(waited / seconds)
    return {"images_per_s": statistics.median(speeds[1:]), "data_share": statistics.median(shares[1:])}


def ours_speed(ctx: Context, batch_size: int, precision: str, epochs: int) -> dict[str, Any]:
    scale = ctx.scale
    config = {
        "dataset": "synthetic",
        "dataset_options": {"n_train": scale.images, "n_test": scale.test_images, "image_size": scale.image_size},
        "model": "resnet18",
        "batch_size": batch_size,
        "micro_batch_size": scale.micro_batch if batch_size > scale.micro_batch else None,
        "drop_last": True,  # full batches only: images/s counts batch_size images per step
        "val_fraction": 0,
        "epochs": epochs,
        "lr": 0.1,
        "rotation": 15.0,
        "augment": True,
        "precision": precision,
        "device": str(ctx.device),
        "eval_batch_size": 4096 if ctx.cuda else 64,
        "checkpoint_every": 0,
        "num_threads": None if ctx.cuda else 1,
    }
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    result = run(config)
    history = result["history"]
    # the first epoch is warm-up; a run that diverged in it (bf16 on a CPU can, at the dry run's tiny shapes) stopped
    # there, and that epoch's steps are all there is to time
    speeds = [row["images_per_s"] for row in history[1:] or history]
    return {
        "images_per_s": statistics.median(speeds),
        "diverged": result["diverged"],
        "warm_up_only": len(history) < 2,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if ctx.cuda else None,
    }


def trial_speed(ctx: Context) -> SectionResult:
    scale = ctx.scale
    out = SectionResult()
    data = load_dataset("synthetic", n_train=scale.images, n_test=scale.test_images, image_size=scale.image_size)
    ctx.data["dataset"] = data
    speeds: dict[tuple[int, str], dict[str, Any]] = {}
    official_note = _torchvision_missing()
    for batch_size in scale.batch_sizes:
        epochs = 3 if scale.images // batch_size < 4 else 2  # at least two measured steps after the warm-up epoch
        for precision in ("fp32", "bf16"):
            row: dict[str, Any] = {"batch": batch_size, "precision": precision}
            try:
                ctx.check_budget("trial_speed")
                ours = ours_speed(ctx, batch_size, precision, epochs)
            except Skip as e:
                out.rows.append({**row, "ours images/s": f"skipped: {e}"})
                continue
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                out.rows.append({**row, "ours images/s": "out of memory"})
                continue
            epoch_s = scale.images / ours["images_per_s"]
            entry = {**ours, "epoch_s": epoch_s}
            row.update({"ours images/s": f"{ours['images_per_s']:.0f}", "ours epoch s": f"{epoch_s:.2f}"})
            if ours["peak_gib"] is not None:
                row["ours peak GiB"] = f"{ours['peak_gib']:.1f}"
            if ours["diverged"]:
                row["note"] = "ours diverged (speed still measured" + (", in warm-up)" if ours["warm_up_only"] else ")")
            try:
                if official_note:
                    raise Skip(official_note)
                ctx.check_budget("trial_speed")
                official = official_style_speed(ctx, data, batch_size, precision, epochs)
                entry["official"] = official
                ratio = ours["images_per_s"] / official["images_per_s"]
                entry["vs_official"] = ratio
                row.update(
                    {
                        "official images/s": f"{official['images_per_s']:.0f}",
                        "official epoch s": f"{scale.images / official['images_per_s']:.2f}",
                        "ours vs official": f"{ratio:.1f}x the official",
                    }
                )
            except Skip as e:
                row["ours vs official"] = f"skipped: {e}" if not official_note else "skipped: no torchvision"
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                row["ours vs official"] = "official: out of memory"
            speeds[(batch_size, precision)] = entry
            out.rows.append(row)
    ctx.data["speeds"] = speeds
    headline = speeds.get((scale.batch_sizes[1], "bf16"), {})
    out.figures = {
        "epoch_s": headline.get("epoch_s"),
        "vs_official": headline.get("vs_official"),
        "headline_batch": scale.batch_sizes[1],
    }
    out.summary.append(
        f"ResNet-18 (CIFAR stem), {scale.images} synthetic uint8 images 3x{scale.image_size}x{scale.image_size}, "
        f"crop+flip+rotation augmentation; batches above {scale.micro_batch} accumulate micro-batches of "
        f"{scale.micro_batch} in both pipelines; the first epoch is warm-up"
    )
    if official_note:
        out.summary.append(f"official-style comparison skipped: {official_note}")
    return out


def data_share(ctx: Context) -> SectionResult:
    speeds = ctx.data.get("speeds")
    if not speeds:
        raise Skip("needs trial_speed's epochs, which did not run")
    out = SectionResult()
    data = ctx.data["dataset"]
    loader_seconds: dict[int, float] = {}
    for (batch_size, precision), entry in speeds.items():
        if batch_size not in loader_seconds:
            args = SimpleNamespace(batch_size=batch_size)
            loader_seconds[batch_size] = ours_data_seconds(args, data, ctx.device)  # the trial's loader, alone
        share = loader_seconds[batch_size] / entry["epoch_s"]
        entry["data_share"] = share
        official = entry.get("official")
        out.rows.append(
            {
                "batch": batch_size,
                "precision": precision,
                "ours data s per epoch": f"{loader_seconds[batch_size]:.3f}",
                "ours data share": f"{share:.1%}",
                "official data share": f"{official['data_share']:.1%}" if official else "-",
            }
        )
    headline = speeds.get((ctx.scale.batch_sizes[1], "bf16"), {})
    out.figures["data_share"] = headline.get("data_share")
    out.summary.append(
        "ours: one epoch of the device loader alone (gather, crop, flip, rotate, normalise) over the trial's epoch "
        "time; official: time the loop waits for the DataLoader's next batch over the epoch time"
    )
    return out


def peak_tflops(precision: str) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, (bf16, tf32) in PEAK_TFLOPS.items():
        if key in name:
            return bf16 if precision == "bf16" else tf32
    return None


def mfu(ctx: Context) -> SectionResult:
    from torch.utils.flop_counter import FlopCounterMode

    out = SectionResult()
    size = ctx.scale.image_size
    model = build_model("resnet18", (3, size, size), 10).to(ctx.device)
    x = torch.randn(4, 3, size, size, device=ctx.device)
    y = torch.randint(0, 10, (4,), device=ctx.device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    per_image = counter.get_total_flops() / len(x)
    ctx.data["flops_per_image"] = per_image
    out.figures["gflops_per_image"] = per_image / 1e9
    out.summary.append(
        f"ResNet-18 at {size}x{size}: {per_image / 1e9:.3f} GFLOP per image for forward + backward (measured)"
    )
    peak = peak_tflops("bf16") if ctx.cuda else None
    if peak:
        floor = ctx.scale.images * per_image / (0.4 * peak * 1e12)
        out.summary.append(f"a {ctx.scale.images}-image epoch at 40 % of the bf16 peak takes {floor:.2f} s")
        out.figures["epoch_s_at_40pct"] = floor
    for (batch_size, precision), entry in ctx.data.get("speeds", {}).items():
        achieved = per_image * entry["images_per_s"] / 1e12
        peak = peak_tflops(precision) if ctx.cuda else None
        entry["mfu"] = achieved / peak if peak else None
        out.rows.append(
            {
                "batch": batch_size,
                "precision": precision,
                "TFLOP/s": f"{achieved:.3f}",
                "peak TFLOP/s": f"{peak:.0f}" if peak else "-",
                "MFU": f"{achieved / peak:.1%}" if peak else "n/a (no peak figure for this device)",
            }
        )
    if not out.rows:
        out.summary.append("no trial speeds to relate to (trial_speed did not run)")
    return out


def optimizer_step(ctx: Context) -> SectionResult:
    out = SectionResult()
    device = str(ctx.device)
    lr = 1e-3
    for model_fn in ctx.scale.optimizer_models:
        contenders: dict[str, torch.optim.Optimizer] = {
            "tvlars_foreach": TVLARS(make_params(model_fn, device), lr=lr, foreach=True),
            "sgd_foreach": torch.optim.SGD(
                make_params(model_fn, device), lr=lr, momentum=0.9, weight_decay=5e-4, foreach=True
            ),
            "sgd_fused": torch.optim.SGD(
                make_params(model_fn, device), lr=lr, momentum=0.9, weight_decay=5e-4, fused=True
            ),
            "adamw_fused": torch.optim.AdamW(make_params(model_fn, device), lr=lr, fused=True),
        }
        if not ctx.dry_run:  # compiling the fused step takes ~1 min on a CPU
            contenders["tvlars_fused"] = TVLARS(make_params(model_fn, device), lr=lr, fused=True)
        ms = measure(
            {name: opt.step for name, opt in contenders.items()},
            ctx.scale.optimizer_rounds,
            ctx.scale.optimizer_steps,
            ctx.sync,
        )
        name = model_fn.__name__
        row: dict[str, Any] = {"shapes": name, **{k: f"{v:.3f}" for k, v in ms.items()}}
        row["TVLARS foreach / SGD foreach"] = f"{ms['tvlars_foreach'] / ms['sgd_foreach']:.2f}x"
        if "tvlars_fused" in ms:
            ratio = ms["tvlars_fused"] / ms["sgd_fused"]
            row["TVLARS fused / SGD fused"] = f"{ratio:.2f}x"
            out.figures.setdefault("fused_vs_sgd", ratio)  # ResNet-18 shapes for the headline
        out.rows.append(row)
    out.summary.append(
        f"median ms per step over {ctx.scale.optimizer_rounds} interleaved rounds of {ctx.scale.optimizer_steps} "
        f"steps, fixed gradients, on {ctx.device}"
    )
    if ctx.dry_run:
        out.summary.append("TVLARS fused skipped in the dry run: compiling its step takes ~1 min on a CPU")
    return out


def packing(ctx: Context) -> SectionResult:
    out = SectionResult()
    trial = ctx.scale.packing_trial
    config = {
        "dataset": "synthetic",
        "dataset_options": {
            "n_train": trial["n_train"],
            "n_test": ctx.scale.test_images,
            "image_size": ctx.scale.image_size,
        },
        "model": "resnet18" if ctx.cuda else "cnn",
        "batch_size": trial["batch_size"],
        "epochs": trial["epochs"],
        "lr": 0.1,
        "rotation": 15.0,
        "device": str(ctx.device),
        "checkpoint_every": 0,
    }
    if not ctx.cuda:
        config["num_threads"] = 1
    if ctx.cuda:
        torch.cuda.empty_cache()  # this process's cached blocks stay out of the trials' way
    per_hour_single = None
    for n in ctx.scale.packing_levels:
        row: dict[str, Any] = {"processes": n, "resources.gpu": f"{1 / n:g}"}
        try:
            ctx.check_budget("packing")
        except Skip as e:
            out.rows.append({**row, "trials/hour": f"skipped: {e}"})
            continue
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--packing-trial", json.dumps(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        results = []
        try:
            for proc in procs:
                stdout, stderr = proc.communicate(timeout=max(ctx.left(), 30))
                if proc.returncode != 0:
                    raise RuntimeError(f"packing trial exited {proc.returncode}: {stderr.strip()[-500:]}")
                results.append(json.loads(stdout.strip().splitlines()[-1]))
        finally:
            for proc in procs:  # none outlives the section (a timeout, a failed sibling, an interrupt)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        wall = time.perf_counter() - start
        per_hour = n * 3600 / wall
        per_hour_single = per_hour_single or per_hour
        row.update(
            {
                "wall s": f"{wall:.1f}",
                "trials/hour": f"{per_hour:.0f}",
                "vs one process": f"{per_hour / per_hour_single:.2f}x",
                "images/s per trial": f"{statistics.mean(r['images_per_s'] for r in results):.0f}",
                "peak memory per trial GiB": f"{max(r['peak_gib'] for r in results):.2f}",
            }
        )
        out.rows.append(row)
        out.figures[f"trials_per_hour_{n}"] = per_hour
    memory = "CUDA memory reserved by torch (the context, ~0.5 GiB, comes on top)" if ctx.cuda else "peak RSS"
    out.summary.append(
        f"each process runs one {config['model']} trial of {trial['epochs']} epoch(s) on {trial['n_train']} images "
        f"at batch {trial['batch_size']}, started together; wall time includes start-up (Python, torch, CUDA "
        f"context), as a Ray worker's first trial would; memory: {memory}"
    )
    return out


def packing_trial(config_json: str) -> int:
    """One packing process: run the trial, print its speed and peak memory as JSON."""
    config = json.loads(config_json)
    result = run(config)
    if torch.cuda.is_available() and config["device"].startswith("cuda"):
        peak = torch.cuda.max_memory_reserved() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(json.dumps({"images_per_s": result["images_per_s"], "peak_gib": peak}))
    return 0


SECTIONS: list[tuple[str, str, Callable[[Context], SectionResult]]] = [
    ("correctness", "Correct on the device", correctness),
    ("step_syncs", "Host syncs inside step()", step_syncs),
    ("trial_syncs", "Host syncs per epoch of a ResNet-18 trial", trial_syncs),
    ("trial_speed", "Trial speed, ours against the official-style pipeline", trial_speed),
    ("data_share", "Data time as a share of step time", data_share),
    ("mfu", "Model FLOPs utilisation", mfu),
    ("optimizer_step", "Optimizer step time", optimizer_step),
    ("packing", "Packing trials on one GPU", packing),
]


# --- the record -------------------------------------------------------------------------------------------------


def environment(ctx: Context, argv: list[str]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/gpu.py", *argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "dry_run": ctx.dry_run,
        "device": str(ctx.device),
        "gpu": torch.cuda.get_device_name() if ctx.cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if ctx.cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "budget_s": round(ctx.deadline - time.monotonic()),
    }
    for module in ("torchvision", "triton"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    return env


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


class Record:
    """gpu.json rewritten and gpu.md appended as each section finishes, so a killed run keeps what it measured."""

    def __init__(self, out: Path, env: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.json_path, self.md_path = out / "gpu.json", out / "gpu.md"
        self.doc: dict[str, Any] = {**env, "sections": [], "headline": None}
        title = env["gpu"] or f"{env['device']} (dry run: tiny shapes, not a GPU measurement)"
        lines = [f"# GPU check: {title}", "", f"`{env['command']}`", ""]
        lines += markdown_table([{k: v for k, v in env.items() if k not in ("command", "dry_run")}])
        self.md_path.write_text("\n".join(lines) + "\n")
        self.write_json()

    def write_json(self) -> None:
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str))
        os.replace(tmp, self.json_path)

    def start(self, name: str, title: str) -> dict[str, Any]:
        entry = {"name": name, "title": title, "status": "running", "seconds": None}
        self.doc["sections"].append(entry)
        self.write_json()
        return entry

    def finish(self, entry: dict[str, Any], status: str, seconds: float, result: SectionResult | None, reason: str):
        entry.update({"status": status, "seconds": round(seconds, 2)})
        if reason:
            entry["reason"] = reason
        if result is not None:
            entry.update(
                {
                    "summary": result.summary,
                    "rows": result.rows,
                    "figures": result.figures,
                    "failed_checks": result.failed_checks,
                }
            )
        self.write_json()
        lines = ["", f"## {entry['name']}: {entry['title']}", "", f"**{status}** in {seconds:.1f} s"]
        lines[-1] += f": {reason}" if reason else ""
        lines.append("")
        if result is not None:
            lines += [f"- {s}" for s in result.summary] + [""] + markdown_table(result.rows)
            lines += [f"- **check failed:** {c}" for c in result.failed_checks]
        with self.md_path.open("a") as f:
            f.write("\n".join(lines) + "\n")

    def close(self, headline: str, figures: dict[str, Any]) -> None:
        goals, rows = [], []
        for name, op, goal, shown, meaning in GOALS:
            value = figures.get(name)
            met = None if value is None else (value >= goal if op == ">=" else value <= goal)
            goals.append({"figure": name, "goal": f"{op} {goal:g}", "measured": value, "met": met, "meaning": meaning})
            rows.append(
                {
                    "figure": name,
                    "goal": f"{op} {shown.format(goal)}",
                    "measured": "-" if value is None else shown.format(value),
                    "met": "-" if met is None else ("yes" if met else "NO"),
                    "meaning": meaning,
                }
            )
        self.doc.update({"goals": goals, "headline": headline})
        self.write_json()
        with self.md_path.open("a") as f:
            f.write("\n".join(["", "## Goals", "", *markdown_table(rows), "", "## Headline", "", f"`{headline}`", ""]))


def headline(ctx: Context, figures: dict[str, Any]) -> str:
    """``gpu: ...``: the goals' figures (n/a where not measured), then the goals."""
    shown = {name: "n/a" if figures.get(name) is None else fmt.format(figures[name]) for name, _, _, fmt, _ in GOALS}
    goals = ", ".join(f"{op} {fmt.format(goal)}" for _, op, goal, fmt, _ in GOALS)
    prefix = "[dry run on cpu, tiny shapes: not GPU figures] " if ctx.dry_run else ""
    return (
        f"gpu: {prefix}{shown['vs_official']} the official (bf16, batch {ctx.scale.batch_sizes[1]}), "
        f"epoch {shown['epoch_s']}, data {shown['data_share']} of step, TVLARS fused {shown['fused_vs_sgd']} "
        f"SGD fused, {shown['syncs_per_step']} host syncs/step (goals {goals})"
    )


def _interrupted(signum, frame):  # a SIGTERM (a timeout) ends the running section as "interrupted"
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="directory for gpu.json and gpu.md (required)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="seconds for all sections (default 360)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: every section's code in seconds")
    parser.add_argument("--packing-trial", help=argparse.SUPPRESS)  # one packing process (JSON trial config)
    args = parser.parse_args(argv)
    if args.packing_trial:
        return packing_trial(args.packing_trial)
    if args.out is None:
        parser.error("--out DIR is required")
    if args.budget_s <= 0:
        parser.error(f"Invalid --budget-s: {args.budget_s} (a number of seconds > 0)")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run `python benchmarks/gpu.py --dry-run --out DIR` for the CPU check")
    ctx = Context(
        device=torch.device("cpu" if args.dry_run else "cuda"),
        dry_run=args.dry_run,
        scale=DRY_SCALE if args.dry_run else GPU_SCALE,
        deadline=time.monotonic() + args.budget_s,
    )
    if args.dry_run:  # one thread: a shared CPU's other load leaves OpenMP's thread teams waiting on each other
        torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, _interrupted)
    record = Record(args.out, environment(ctx, argv))
    print(f"GPU check on {record.doc['gpu'] or ctx.device}, torch {torch.__version__}, budget {args.budget_s:.0f} s")
    figures: dict[str, Any] = {}
    problems: list[str] = []
    try:
        run_sections(ctx, record, figures, problems)
    except KeyboardInterrupt:
        line = headline(ctx, figures) + " [interrupted]"
        record.close(line, figures)
        print(line)
        return 130
    line = headline(ctx, figures)
    record.close(line, figures)
    for problem in problems:
        print(f"  FAILED: {problem}")
    print(line)
    return 1 if problems else 0


def run_sections(ctx: Context, record: Record, figures: dict[str, Any], problems: list[str]) -> None:
    """Each section in turn, recorded as it ends; collects the headline's figures and every failed check."""
    for i, (name, title, section) in enumerate(SECTIONS):
        entry = record.start(name, title)
        start = time.perf_counter()
        result, status, reason = None, "ok", ""
        try:
            ctx.check_budget(name)
            result = section(ctx)
        except Skip as e:
            status, reason = "skipped", str(e)
        except KeyboardInterrupt as e:
            record.finish(entry, "interrupted", time.perf_counter() - start, None, f"interrupted: {e}")
            for later, later_title, _ in SECTIONS[i + 1 :]:
                record.finish(record.start(later, later_title), "skipped", 0.0, None, "the run was interrupted first")
            raise
        except Exception as e:  # one broken section must not lose the others' figures
            status, reason = "failed", f"{type(e).__name__}: {e}"
            problems.append(f"{name}: {reason}")
            traceback.print_exc()
        seconds = time.perf_counter() - start
        record.finish(entry, status, seconds, result, reason)
        if result is not None:
            figures.update({k: v for k, v in result.figures.items() if v is not None})
            problems += result.failed_checks
        print(f"  {name:15s} {status:8s} {seconds:6.1f} s  {reason or '; '.join(result.summary[:1])}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
