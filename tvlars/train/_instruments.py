"""The loop's instruments: a device-aware stopwatch, a divergence watch that does not stall the device, the
optimizer's own readings (φ, trust ratio) and the device's name, as each epoch's row reports them."""

from __future__ import annotations

import time

import torch
from torch import Tensor

__all__ = ["DivergenceWatch", "Stopwatch", "device_name", "optimizer_readings"]


class Stopwatch:
    """Elapsed time of a stretch of device work: CUDA events on CUDA (read after the epoch's one sync), else a clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.end.record()
        else:
            self.seconds_ = time.perf_counter() - self.t0

    def seconds(self) -> float:
        """Call after the device work is known to be done (here: after the epoch's device→host transfer)."""
        return self.begin.elapsed_time(self.end) / 1e3 if self.cuda else self.seconds_


class DivergenceWatch:
    """Notices a non-finite loss without stalling the device.

    On CPU it checks every step (reading a CPU tensor costs nothing). On CUDA it copies a flag to pinned host
    memory without blocking and reads it once the copy's event has completed, a few steps later at most.
    """

    def __init__(self, device: torch.device, check_every: int) -> None:
        self.cuda = device.type == "cuda"
        self.check_every = check_every
        self.pending: list[tuple[torch.cuda.Event, Tensor]] = []
        self.step = 0

    def diverged(self, loss: Tensor) -> bool:
        self.step += 1
        if not self.cuda:
            return not bool(torch.isfinite(loss))
        if self.step % self.check_every == 0:
            flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            flag.copy_(torch.isfinite(loss), non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.pending.append((event, flag))
        while self.pending and self.pending[0][0].query():
            _, flag = self.pending.pop(0)
            if not bool(flag):  # pinned host memory the copy has finished writing: no device sync
                return True
        return False


def optimizer_readings(opt: torch.optim.Optimizer) -> tuple[float | None, Tensor | None]:
    """φ at the latest step (a host float, no sync) and the mean trust ratio (a device tensor), from the optimizer's
    ``step_readings()`` where it offers one (TVLARS, LARS, LAMB do); (None, None) otherwise."""
    readings = getattr(opt, "step_readings", None)
    return readings() if callable(readings) else (None, None)


def device_name(device: torch.device) -> str:
    """Where a trial trains, as its rows report it: the GPU's name, or the CPU threads."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"
