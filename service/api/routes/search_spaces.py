"""/v1/search-spaces: the presets a study can start from."""

from __future__ import annotations

import functools

from fastapi import APIRouter, HTTPException

import search_spaces

from ..deps import ReadKey
from ..errors import COMMON_RESPONSES
from ..models import SearchSpacePublic, SearchSpacesPublic

router = APIRouter(prefix="/v1/search-spaces", tags=["search-spaces"], responses=COMMON_RESPONSES)


@router.get("", response_model=SearchSpacesPublic)
def read_search_spaces(_: ReadKey) -> SearchSpacesPublic:
    """Every preset, summarised; submit one with ``{"preset": NAME}``."""
    return _summaries()


@functools.cache
def _summaries() -> SearchSpacesPublic:
    # presets are files shipped with the package: validate them once per process
    items = []
    for name in search_spaces.names():
        spec = search_spaces.load_spec(name)
        items.append(
            SearchSpacePublic(
                name=name,
                description=spec.description,
                optimizer=spec.optimizer,
                workload=spec.workload.model_dump(),
                parameters=list(spec.search_space),
                sampler=spec.sampler.name,
                scheduler=spec.scheduler.name,
                n_trials=spec.budget.n_trials,
            )
        )
    return SearchSpacesPublic(items=items)


@router.get("/{name}", responses={404: {"description": "No such preset"}})
def read_search_space(name: str, _: ReadKey) -> dict:
    """A preset's full spec."""
    if name not in search_spaces.names():
        raise HTTPException(404, f"Unknown preset: {name!r}")
    return search_spaces.load_spec(name).canonical()
