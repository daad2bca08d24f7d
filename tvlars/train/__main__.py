"""``python -m tvlars.train key=value ...``: one trial from the command line, a row per epoch.

python -m tvlars.train dataset=mnist1d model=mlp optimizer=tvlars batch_size=1000 epochs=5 lr=4
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from ..optim import OPTIMIZERS
from .keys import SECTIONS
from .loop import run
from .metrics import SUMMARIES, Metric


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip().split("\n", 1)[1].strip())
        print("\nKeys and defaults (a key the chosen optimizer, task or model does not take is an error):")
        for section, keys in SECTIONS.items():
            print(f"  {section}:")
            for f in dataclasses.fields(keys):
                if f.name == "hyperparameters":  # given flat: each optimizer's keys, listed below
                    continue
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                print(f"    {f.name} = {default!r}")
        for entry in OPTIMIZERS.entries()[0]:
            print(f"  optimizer={entry.name} ({entry.source}):")
            for h in entry.obj.hyperparameters:
                print(f"    {h.key} = {h.default!r}")
        return 0
    config = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            print(f"error: expected key=value, got {arg!r}", file=sys.stderr)
            return 2
        config[key] = _parse_value(value)
    columns = (
        Metric.EPOCH,
        Metric.TRAIN_LOSS,
        Metric.VAL_LOSS,
        Metric.VAL_ACC,
        Metric.TEST_LOSS,
        Metric.TEST_ACC,
        Metric.LR,
        Metric.PHI,
        Metric.IMAGES_PER_S,
    )
    print("  ".join(f"{c:>12s}" for c in columns))

    def show(row: dict[str, Any]) -> None:
        cells = [row.get(c, "-") for c in columns]
        print("  ".join(f"{v:>12.4g}" if isinstance(v, float) else f"{v!s:>12s}" for v in cells), flush=True)

    try:
        result = run(config, show)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = (*SUMMARIES, Metric.FINAL_TEST_ACC, Metric.EPOCHS_RUN, Metric.DIVERGED, Metric.DEVICE)
    summary = {str(k): result[k] for k in keys if k in result}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
