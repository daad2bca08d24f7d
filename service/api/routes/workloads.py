"""/v1/workloads: what this installation can tune, built in or from installed plugins, with options and defaults.

The API validates specs against its own environment: what is listed here. Nothing is imported on a request's
behalf except the entry points of distributions installed here (the first listing imports each once); a plugin
that fails to import is listed under ``broken`` with its error.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from fastapi import APIRouter

from service.core.jsondata import jsonable
from tvlars.data import DATASETS
from tvlars.models import MODELS
from tvlars.optim import get_optimizer_info, get_recipe
from tvlars.registry import BUILT_IN, REQUIRED, Entry
from tvlars.train import OPTIMIZERS, TASKS
from tvlars.train.config import OPTIMIZER_KEYS

from ..deps import ReadKey
from ..errors import COMMON_RESPONSES
from ..models import BrokenWorkloadPublic, OptimizerPublic, WorkloadPublic, WorkloadsPublic

router = APIRouter(prefix="/v1/workloads", tags=["workloads"], responses=COMMON_RESPONSES)


@router.get("", response_model=WorkloadsPublic)
def read_workloads(_: ReadKey) -> WorkloadsPublic:
    """Datasets, models, tasks and optimizers: options, defaults and where each comes from."""
    listed: dict[str, list[WorkloadPublic]] = {}
    broken: list[BrokenWorkloadPublic] = []
    for key, registry in (("datasets", DATASETS), ("models", MODELS), ("tasks", TASKS)):
        entries, failures = registry.entries()
        listed[key] = [_workload(e) for e in entries]
        broken += [BrokenWorkloadPublic(kind=b.kind, name=b.name, source=b.source, error=b.error) for b in failures]
    return WorkloadsPublic(**listed, optimizers=[_optimizer(name) for name in OPTIMIZERS], broken=broken)


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


def _optimizer(name: str) -> OptimizerPublic:
    recipe = get_recipe(name)
    info = get_optimizer_info(recipe.optimizer)
    signature = inspect.signature(info.cls.__init__).parameters
    hyperparameters = {
        p: _default(info.defaults.get(p, signature[p].default))
        for p in info.hyperparameters
        if p in info.defaults or signature[p].default is not inspect.Parameter.empty
    }
    is_recipe = recipe.name != recipe.optimizer
    return OptimizerPublic(
        name=name,
        optimizer=info.name,
        source=BUILT_IN,
        description=recipe.description,
        hyperparameters=hyperparameters,
        trial_keys=[key for key, argument in OPTIMIZER_KEYS.items() if argument in info.hyperparameters],
        recipe=(
            {
                "lr_scaling": recipe.lr_scaling,
                "warmup_fraction": recipe.warmup_fraction,
                "lr_schedule": recipe.lr_schedule,
            }
            if is_recipe
            else None
        ),
    )


__all__ = ["router"]
