"""Run one study with the engine alone (no API, no worker): ``python -m service.engine SPEC.yaml --storage URL``.

Exit status: 0 SUCCEEDED, 1 FAILED, 2 bad input, 3 CANCELLED (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path

import yaml

import search_spaces

from ..errors import TvlarsTuneError
from ..models import StudyState
from . import run_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.engine", description=__doc__)
    parser.add_argument("spec", nargs="?", help="a study spec file (YAML or JSON)")
    parser.add_argument("--preset", help="a preset from search_spaces/ instead of a file")
    parser.add_argument("--set", action="append", default=[], metavar="JSON", help="override fields, as JSON")
    parser.add_argument("--storage", default="sqlite:///./tvlars-tune.db", help="Optuna storage URL")
    parser.add_argument("--resume", action="store_true", help="allow a changed budget (extend the study)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.spec) == bool(args.preset):
        parser.error("give a spec file or --preset, not both")
    data = search_spaces.load(args.preset) if args.preset else yaml.safe_load(Path(args.spec).read_text())
    try:
        data = search_spaces.apply_overrides(data, args.set)
    except ValueError as e:  # json.JSONDecodeError is one
        parser.error(str(e))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        outcome = run_study(
            search_spaces.resolve(data),
            args.storage,
            resume=args.resume,
            should_cancel=stop.is_set,
            on_progress=lambda counts: logging.info(
                "progress: %s", {k: v for k, v in dataclasses.asdict(counts).items() if v}
            ),
        )
    except (TvlarsTuneError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(outcome.as_dict()))
    return {StudyState.SUCCEEDED: 0, StudyState.CANCELLED: 3}.get(outcome.state, 1)


if __name__ == "__main__":
    sys.exit(main())
