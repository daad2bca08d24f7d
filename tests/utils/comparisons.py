"""A realistic fabricated comparison result (MNIST-1D-like numbers) for report tests and the example screenshot."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from service.comparisons.result import ArmResult, ComparisonResult, ParamRange, RepeatRecord, RerunRecord, TrialRecord
from service.comparisons.stats import at_edge

_LEVEL = {"tvlars": 0.70, "lars_warmup": 0.69, "lars": 0.66, "lamb": 0.72}
_CENTER = {"tvlars": 1.8, "lars_warmup": 0.25, "lars": 1.8, "lamb": 0.01}
_LR_RANGE = {label: (c / 10, c * 10) for label, c in _CENTER.items()}


def fabricated_result(
    batch_sizes=(32, 256, 1024, 4000), n_trials=6, seeds=3, epochs=30, repeats=3, levels=None
) -> ComparisonResult:
    """Example data, not a run: its title says so. ``levels`` overrides arms' mean scores (``{label: score}``)."""
    rng = np.random.default_rng(42)
    level_of = {**_LEVEL, **(levels or {})}
    arms = []
    study = 1
    for label, level in level_of.items():
        for bs in batch_sizes:
            drop = 0.04 * math.log2(bs / batch_sizes[0]) / 7 * (1.5 if label == "lars" else 1.0)
            mean = level - drop
            spe = math.ceil(4000 / bs)
            trials, reruns, repeat_records = [], [], []
            for repeat in range(repeats):
                found = []
                for n in range(n_trials):
                    lr = _CENTER[label] * 10 ** rng.uniform(-1, 1)
                    state = "PRUNED" if n % 3 == 2 else "FAIL" if n == 4 and label == "lars" else "COMPLETE"
                    value = (
                        None
                        if state == "FAIL"
                        else float(mean - 0.1 * abs(math.log10(lr / _CENTER[label])) ** 2 - rng.uniform(0, 0.03))
                    )
                    params = {"lr": lr, **({"lam_steps": 5.0} if label == "tvlars" else {})}
                    found.append(
                        TrialRecord(
                            n, state, params, value, epochs if state == "COMPLETE" else 10, 0.08 * epochs, [], repeat
                        )
                    )
                trials += found
                winner = max((t for t in found if t.state == "COMPLETE"), key=lambda t: t.value)
                low, high = _LR_RANGE[label]
                position = math.log(winner.params["lr"] / low) / math.log(high / low)
                ranges = {"lr": ParamRange(low, high, True, winner.params["lr"], position, at_edge(position))}
                spent = sum(t.epochs for t in found)
                repeat_records.append(
                    RepeatRecord(repeat, [f"s{study}-t{repeat}"], spent, winner.value, winner.params, ranges)
                )
                shift = rng.normal(0, 0.004)  # what another tuning's winner does to the score
                for j in range(seeds):
                    final = float(mean + shift + rng.normal(0, 0.006))
                    curve = [
                        {
                            "epoch": e,
                            "val_acc": final * (1 - math.exp(-e / 6)) + rng.normal(0, 0.004),
                            "step": e * spe,
                            "epoch_seconds": 0.08,
                        }
                        for e in range(1, epochs + 1)
                    ]
                    reruns.append(RerunRecord(1_000_000 + j, final, curve, 1, repeat))
            params = {"lr": _CENTER[label]} | ({"lam_steps": 5.0} if label == "tvlars" else {})
            fixed = {"alpha": 0.1, "delay_fraction": 0.0} if label == "tvlars" else {}
            fixed |= {"warmup_epochs": 6.0} if label == "lars_warmup" else {}
            importances = {"lr": 0.8, "lam_steps": 0.2} if label == "tvlars" else {"lr": 1.0}
            arms.append(
                ArmResult(
                    label, label, bs, [study], params, fixed, epochs, spe, trials, reruns, importances,
                    repeat_records, sum(r.epochs_spent for r in repeat_records),
                )
            )  # fmt: skip
            study += 1
    return ComparisonResult(
        name="compare-mnist1d-cpu",
        workload={"dataset": "mnist1d", "model": "mlp", "epochs": epochs},
        objective="val_acc",
        arms=arms,
        target_val_acc=0.6,
        title="Example report (fabricated data): compare-mnist1d-cpu",
        tuning_repeats=repeats,
        range_check="extend",
    )


def chromium() -> str | None:
    """The headless browser the report tests open pages in, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def headless_chromium(tmp_path: Path) -> list[str]:
    """The command line that starts headless Chromium with a profile of its own under ``tmp_path`` (we run as root)."""
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]


def rendered_image_widths(page: str, tmp_path: Path) -> list[int]:
    """Each image's decoded width once headless Chromium has loaded ``page`` (a probe writes them into the DOM)."""
    probe = (
        "<script>window.addEventListener('load',()=>{for(const i of document.images)"
        "{i.setAttribute('data-natural-width',String(i.naturalWidth))}})</script></body>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe), encoding="utf-8")
    dom = subprocess.run(
        [*headless_chromium(tmp_path), "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
