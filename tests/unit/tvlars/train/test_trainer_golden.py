"""The trainer package reproduces, bit for bit, what ``run`` returned before it became a package.

``data/trainer_golden.json`` holds every report and result (timings left out) of seven seeded CPU trials recorded
with the single-module trainer: classification (MLP on MNIST-1D, CNN on synthetic images, lars_warmup, LAMB on
digits), Barlow Twins (MLP and CNN) and a TVLARS run resumed from its state after epoch 2. Floats compare with ==.
To re-record on purpose: ``python tests/unit/tvlars/train/test_trainer_golden.py OUT.json`` with the trainer to record.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tvlars.train import run

GOLDEN = Path(__file__).parent / "data" / "trainer_golden.json"
#: Wall-clock readings: they differ on every run.
TIMING = ("images_per_s", "epoch_seconds", "wall_seconds", "device")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in TIMING}
    if "history" in out:
        out["history"] = [_clean(r) for r in out["history"]]
    return out


def _replay(case: dict[str, Any]) -> dict[str, Any]:
    config = dict(case["config"])
    state = None
    if "resume_after_epoch" in case:
        saved: dict[int, bytes] = {}

        def save(epoch: int, trial_state: dict[str, Any]) -> None:
            buffer = io.BytesIO()
            torch.save(trial_state, buffer)
            saved[epoch] = buffer.getvalue()

        run(dict(config), None, save_state=save)
        state = torch.load(io.BytesIO(saved[case["resume_after_epoch"]]), weights_only=True)
    reports: list[dict[str, Any]] = []
    result = run(dict(config), reports.append, state=state)
    # through JSON, as recorded: NaN and tuples compare the same way on both sides
    return json.loads(json.dumps({"reports": [_clean(r) for r in reports], "result": _clean(result)}))


CASES = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_identical_to_the_single_module_trainer(name):
    torch.set_num_threads(1)
    case = CASES[name]
    got = _replay(case)
    assert got["reports"] == case["reports"]
    assert got["result"] == case["result"]


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = {n: {**c, **_replay(c)} for n, c in CASES.items()}
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
