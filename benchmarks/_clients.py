"""Benchmark helpers: gathering what concurrent client threads measured."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, as_completed


def gather(futures: Iterable[Future]) -> tuple[dict[str, list[float]], Counter]:
    """Each client's ``(latencies by kind of call, errors by kind)``, merged as they finish. A client that died of
    anything but a failed call (those it counts itself) is one error, by kind: never a silently missing client."""
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter = Counter()
    for f in as_completed(list(futures)):
        if (e := f.exception()) is not None:
            errors[f"client died: {type(e).__name__}: {e}"] += 1
            continue
        out, errs = f.result()
        for label, samples in out.items():
            latencies[label] += samples
        errors += errs
    return latencies, errors
