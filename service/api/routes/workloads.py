"""/v1/workloads: what this installation can tune, built in or from installed plugins, with options and defaults.

The API validates specs against its own environment: what is listed here. Nothing is imported on a request's
behalf except the entry points of distributions installed here (the first listing imports each once); a plugin
that fails to import is listed under ``broken`` with its error.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from fastapi import APIRouter

from service.core.jsondata import jsonable
from tvlars.data import DATASETS
from tvlars.models import MODELS
from tvlars.optim import OPTIMIZERS, Hyperparameter, OptimizerSpec
from tvlars.registry import REQUIRED, Entry
from tvlars.train import TASKS

from ..deps import ReadKey
from ..errors import COMMON_RESPONSES
from ..models import (
    BrokenWorkloadPublic,
    HyperparameterPublic,
    OptimizerPublic,
    WorkloadPublic,
    WorkloadsPublic,
)

router = APIRouter(prefix="/v1/workloads", tags=["workloads"], responses=COMMON_RESPONSES)


@router.get("", response_model=WorkloadsPublic)
def read_workloads(_: ReadKey) -> WorkloadsPublic:
    """Datasets, models, tasks and optimizers: options, defaults and where each comes from."""
    listed: dict[str, list[WorkloadPublic]] = {}
    broken: list[BrokenWorkloadPublic] = []
    for key, registry in (("datasets", DATASETS), ("models", MODELS), ("tasks", TASKS), ("optimizers", OPTIMIZERS)):
        entries, failures = registry.entries()
        listed[key] = [_optimizer(e) if key == "optimizers" else _workload(e) for e in entries]
        broken += [BrokenWorkloadPublic(kind=b.kind, name=b.name, source=b.source, error=b.error) for b in failures]
    return WorkloadsPublic(**listed, broken=broken)


def _default(value: Any) -> Any:
    """A default as JSON: plain data as it is, anything else (a class, a function) as its repr."""
    if value is None or isinstance(value, bool | int | float | str | list | tuple | dict):
        return jsonable(value)
    return repr(value)


def _workload(entry: Entry) -> WorkloadPublic:
    options = {k: _default(v) for k, v in entry.options.items() if v != REQUIRED}
    required = [k for k, v in entry.options.items() if v == REQUIRED]
    return WorkloadPublic(
        kind=entry.kind,
        name=entry.name,
        source=entry.source,
        description=entry.description,
        options=options,
        required=required,
        bounds={k: {f: v for f, v in dataclasses.asdict(b).items() if v is not None} for k, b in entry.bounds.items()},
    )


def _optimizer(entry: Entry) -> OptimizerPublic:
    spec: OptimizerSpec = entry.obj
    plain = spec.lr_scaling == "none" and not spec.warmup_fraction and spec.lr_schedule == "constant"
    return OptimizerPublic(
        name=entry.name,
        optimizer=getattr(spec.factory, "__qualname__", repr(spec.factory)),
        source=entry.source,
        description=entry.description,
        hyperparameters={h.key: _default(h.default) for h in spec.hyperparameters},
        trial_keys=list(spec.keys),
        options={h.key: _hyperparameter(h) for h in spec.hyperparameters},
        recipe=None
        if plain
        else {"lr_scaling": spec.lr_scaling, "warmup_fraction": spec.warmup_fraction, "lr_schedule": spec.lr_schedule},
        references={bs: {k: _default(v) for k, v in spec.reference(bs).items()} for bs in sorted(spec.references)},
        contains=sorted(spec.contains),
    )


def _hyperparameter(h: Hyperparameter) -> HyperparameterPublic:
    bounds = h.bounds
    kind = typing.get_args(h.type)[0] if typing.get_origin(h.type) is typing.Annotated else h.type
    return HyperparameterPublic(
        type=getattr(kind, "__name__", None) or str(kind).replace("NoneType", "None"),
        default=_default(h.default),
        argument=h.target,
        bounds={} if bounds is None else {k: v for k, v in vars(bounds).items() if v is not None},
        search=None if h.search is None else vars(h.search),
        help=h.help,
    )


__all__ = ["router"]
