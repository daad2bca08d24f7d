"""Values as strict JSON data, for what is stored as JSON (Optuna user attrs, reports to Ray Tune, a comparison's
result) and served over REST."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """Plain JSON data: NaN and ±inf become None (JSON has no such numbers), tuples become lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
