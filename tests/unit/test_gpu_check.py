"""benchmarks/gpu.py, the one GPU check, as its dry run: CPU, tiny shapes, every section's code in seconds.

Run as a GPU machine runs it (a subprocess from the repository root), then read what it wrote: every section has a
status and a timing, the CUDA-only ones say so, a short budget skips sections with the reason and keeps what ran,
and a run stopped with SIGTERM keeps the sections it finished.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
#: The sections issue 20 asks for, in order (a section dropped or renamed fails here).
SECTIONS = [
    "correctness",
    "step_syncs",
    "trial_syncs",
    "trial_speed",
    "data_share",
    "mfu",
    "optimizer_step",
    "packing",
]
CUDA_ONLY = {"step_syncs", "trial_syncs"}

pytestmark = pytest.mark.slow


def dry_run(out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sections(out: Path) -> dict[str, dict]:
    doc = json.loads((out / "gpu.json").read_text())
    return {s["name"]: s for s in doc["sections"]}


def test_dry_run_records_every_section(tmp_path):
    out = tmp_path / "gpu"
    proc = dry_run(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu: [dry run on cpu"), last
    doc = json.loads((out / "gpu.json").read_text())
    assert doc["headline"] == last
    assert doc["torch"] == torch.__version__ and doc["dry_run"] is True
    assert "benchmarks/gpu.py --dry-run --out" in doc["command"]
    assert [s["name"] for s in doc["sections"]] == SECTIONS
    for s in doc["sections"]:
        assert isinstance(s["seconds"], float | int) and s["seconds"] >= 0, s
        if s["name"] in CUDA_ONLY:
            assert s["status"] == "skipped" and s["reason"].startswith("no CUDA"), s
        else:
            assert s["status"] == "ok", s
            assert s["rows"] and not s["failed_checks"], s

    found = sections(out)
    correct = found["correctness"]["figures"]
    assert correct["checked"] >= 20 and correct["matched"] == correct["checked"]
    speed_rows = found["trial_speed"]["rows"]
    assert [(r["batch"], r["precision"]) for r in speed_rows] == [(b, p) for b in (4, 8, 16) for p in ("fp32", "bf16")]
    assert all(float(r["ours images/s"]) > 0 for r in speed_rows)
    assert found["mfu"]["figures"]["gflops_per_image"] > 0
    assert all(r["ours data share"].endswith("%") for r in found["data_share"]["rows"])
    step_row = found["optimizer_step"]["rows"][0]
    assert {"tvlars_foreach", "sgd_foreach", "sgd_fused", "adamw_fused"} <= set(step_row)
    assert [r["processes"] for r in found["packing"]["rows"]] == [1, 2]
    assert all(float(r["trials/hour"]) > 0 for r in found["packing"]["rows"])

    md = (out / "gpu.md").read_text()
    assert "dry run" in md and torch.__version__ in md and "--dry-run" in md
    for name in SECTIONS:
        assert f"## {name}: " in md
    assert md.rstrip().endswith(f"`{last}`")


def test_short_budget_skips_sections_and_keeps_what_ran(tmp_path):
    out = tmp_path / "gpu"
    proc = dry_run(out, "--budget-s", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = sections(out)
    assert list(found) == SECTIONS
    assert found["correctness"]["status"] == "ok" and found["correctness"]["rows"]
    skipped = [s for s in found.values() if s["status"] == "skipped" and s["reason"].startswith("budget:")]
    # a 3 s budget never has the ~3 s and ~5 s these two need left once correctness has run (trial_speed, ~1 s a
    # row, may still fit a row on a quick machine)
    assert {"optimizer_step", "packing"} <= {s["name"] for s in skipped}
    assert "**skipped** in 0.0 s: budget:" in (out / "gpu.md").read_text()


def test_a_stopped_run_keeps_the_finished_sections(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # stop it inside trial_speed, after correctness has been written
            if (out / "gpu.json").exists() and "trial_speed" in sections(out):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the dry run never reached trial_speed")
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    found = sections(out)
    assert list(found) == SECTIONS
    assert found["correctness"]["status"] == "ok" and found["correctness"]["rows"]
    assert found["trial_speed"]["status"] == "interrupted"
    assert found["packing"]["status"] == "skipped"
    assert stdout.strip().splitlines()[-1].endswith("[interrupted]")
    assert "## correctness: " in (out / "gpu.md").read_text()
