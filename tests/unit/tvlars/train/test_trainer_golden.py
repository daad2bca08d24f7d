"""The trainer package reproduces, bit for bit, what ``run`` returned before it became a package.

``data/trainer_golden.json`` holds every report and result (timings left out) of seven seeded CPU trials recorded
with the single-module trainer: classification (MLP on MNIST-1D, CNN on synthetic images, lars_warmup, LAMB on
digits), Barlow Twins (MLP and CNN) and a TVLARS run resumed from its state after epoch 2. Everything compares with
== except floats, which compare to within float32 rounding (``FLOAT_REL``): a CPU with other vector units (AVX-512 and
AMX where the file was recorded on another) sums in another order, and its losses differ in the last bit or two
(measured: ≤ 1.4e-7 relative on the losses, 1.3e-5 on a trust ratio, a ratio of norms; every accuracy, step and count
identical). A change of logic moves accuracies by a whole example (≥ 1e-3 here) and losses far more.
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
#: How far a float may be from the recording's: float32 rounding on another CPU, far below any change of logic.
FLOAT_REL = 1e-4


def _approx(value: Any) -> Any:
    """``value`` with every float to be compared within ``FLOAT_REL`` (NaN equal to NaN); the rest exactly."""
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=FLOAT_REL, abs=1e-12, nan_ok=True)
    return value


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
    assert got["reports"] == _approx(case["reports"])
    assert got["result"] == _approx(case["result"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = {n: {**c, **_replay(c)} for n, c in CASES.items()}
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
