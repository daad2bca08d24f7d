"""Study presets (YAML files in this folder) and the spec model that validates them.

>>> "mnist1d-quick" in names()
True
>>> load_spec("mnist1d-quick", {"budget": {"n_trials": 3}}).budget.n_trials
3
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from .spec import StudySpec

__all__ = ["StudySpec", "apply_overrides", "load", "load_spec", "merge", "names", "resolve"]

_DIR = Path(__file__).resolve().parent


class PresetNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@cache
def names() -> list[str]:
    """The presets' names (their file names without ``.yaml``), sorted."""
    return sorted(p.stem for p in _DIR.glob("*.yaml"))


@cache
def _read(name: str) -> dict[str, Any]:
    if name not in names():
        raise PresetNotFoundError(f"Unknown preset: {name!r} (see GET /v1/search-spaces or `tvlars-tune presets`)")
    data = yaml.safe_load((_DIR / f"{name}.yaml").read_text())
    if not isinstance(data, dict):
        raise ValueError(f"preset {name}: expected a mapping at the top level")
    data.setdefault("name", name)
    return data


def load(name: str) -> dict[str, Any]:
    """A preset's raw spec data (a fresh copy: callers may change it)."""
    return copy.deepcopy(_read(name))


#: Fields an override replaces whole rather than merging into: a search space is one unit.
_REPLACED_WHOLE = {"search_space"}


def merge(base: dict[str, Any], override: dict[str, Any], _top: bool = True) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else replaces.

    ``search_space`` is replaced whole, so an override can drop parameters.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        whole = _top and key in _REPLACED_WHOLE
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not whole:
            out[key] = merge(out[key], value, _top=False)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set`` of the command lines: each a JSON object deep-merged onto ``data`` in turn (see :func:`merge`).

    >>> apply_overrides({"budget": {"n_trials": 5, "max_failed": 1}}, ['{"budget": {"n_trials": 8}}'])
    {'budget': {'n_trials': 8, 'max_failed': 1}}
    """
    for override in overrides:
        value = json.loads(override)
        if not isinstance(value, dict):
            raise ValueError(f"--set takes a JSON object, got {override!r}")
        data = merge(data, value)
    return data


def resolve(data: dict[str, Any]) -> dict[str, Any]:
    """Expand ``preset: NAME`` in spec data: the preset, overridden by the other fields."""
    if "preset" not in data:
        return data
    rest = {k: v for k, v in data.items() if k != "preset"}
    return merge(load(str(data["preset"])), rest)


def load_spec(name: str, overrides: dict[str, Any] | None = None) -> StudySpec:
    """A preset as a validated :class:`StudySpec`, with optional overrides."""
    from .spec import StudySpec

    return StudySpec.model_validate(merge(load(name), overrides or {}))


def __getattr__(name: str) -> Any:
    # the spec model loads tvlars (and torch): only on use, so that the client CLI merging --set stays light
    if name == "StudySpec":
        from .spec import StudySpec

        return StudySpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
