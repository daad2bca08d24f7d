"""Trials killed for memory (issue 26): the kernel picks a trial before the API or the worker, and such a trial's
fail_reason says "out of memory"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.engine._tune import out_of_memory
from service.engine.trainable import TRIAL_OOM_SCORE_ADJ


@pytest.mark.skipif(not Path("/proc/self/oom_score_adj").exists(), reason="Linux only")
def test_a_trial_process_raises_its_own_oom_score():
    code = (
        "from service.engine.trainable import _prefer_oom_kill; _prefer_oom_kill(); "
        "print(open('/proc/self/oom_score_adj').read())"
    )
    # (this process's own score is read before: a trial run in process by another test may have raised it)
    own = int(Path("/proc/self/oom_score_adj").read_text())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == TRIAL_OOM_SCORE_ADJ
    assert int(Path("/proc/self/oom_score_adj").read_text()) == own  # this process is untouched


@pytest.mark.parametrize(
    ("text", "oom"),
    [
        ("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.", True),
        ("The actor died unexpectedly: worker exit: SIGKILL", True),
        ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("MemoryError", True),
        ("ValueError: Invalid lr: -1.0", False),
    ],
)
def test_an_out_of_memory_error_is_recognised(text, oom):
    assert out_of_memory(text) is oom
