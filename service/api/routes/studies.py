"""/v1/studies: submit, list, read, cancel, resume; trials and leaderboards from Optuna's tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

import search_spaces
from search_spaces.spec import StudySpec

from ... import crud
from ...core.config import Settings
from ...models import StudyRecord, StudyState
from ...optuna_queries import TRIAL_STATES, leaderboard, trial_counts, trials_page
from ...trial_report import SUMMARY_METRICS
from ..cache import CACHED_RESPONSES, cached_read
from ..deps import Offset, ReadKey, SettingsDep, WriteKey, check_owner
from ..errors import COMMON_RESPONSES, conflict, not_found, validate_body
from ..limits import check_resources, check_trial_memory
from ..models import (
    LeaderboardPublic,
    Progress,
    ResumeRequest,
    StudiesPublic,
    StudyCreate,
    StudyPublic,
    TrialsPublic,
)
from ..writes import IdempotencyKey, submitted, written

router = APIRouter(prefix="/v1/studies", tags=["studies"], responses=COMMON_RESPONSES)

StateFilter = Annotated[StudyState | None, Query()]
TrialStateFilter = Annotated[str | None, Query(pattern=f"^({'|'.join(TRIAL_STATES)})$")]

_NOT_FOUND = not_found("Study not found")
_CONFLICT = conflict("Not possible in the study's current state")


def validate_spec(body: dict[str, Any]) -> StudySpec:
    """Resolve a preset and validate; errors become 422 with each field's location under ``body``."""
    return validate_body(StudySpec, body, search_spaces.resolve)


def _best(session: Session, record: StudyRecord, n_complete: int, n_finished: int) -> dict[str, Any] | None:
    """A finished study's best trial is in its stored outcome; a live one's comes from the leaderboard query."""
    outcome = record.outcome or {}
    if StudyState(record.state).is_finished and isinstance(outcome.get("best_value"), float | int):
        return {
            "number": outcome["best_trial_number"],
            "value": outcome["best_value"],
            "params": outcome["best_params"],
            **(outcome.get("best_metrics") or {}),
        }
    top = leaderboard(session, record.name, 1, n_finished=n_finished) if n_complete else None
    return {k: top[0][k] for k in ("number", "value", "params", *SUMMARY_METRICS)} if top else None


def to_public(session: Session, records: list[StudyRecord]) -> list[StudyPublic]:
    counts = trial_counts(session, [r.name for r in records])
    out = []
    for r in records:
        c = counts[r.name]
        best = _best(session, r, c.complete, c.finished)
        out.append(
            StudyPublic(
                id=r.id,
                name=r.name,
                state=r.state,
                cancel_requested=r.cancel_requested,
                spec=r.spec,
                progress=Progress.of(c, r.spec["budget"]["n_trials"]),
                best=best,
                error=r.error,
                owner=r.owner,
                worker_id=r.worker_id,
                created_at=r.created_at,
                updated_at=r.updated_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
            )
        )
    return out


def _one(session: Session, record: StudyRecord) -> StudyPublic:
    return to_public(session, [record])[0]


def _cached_read(
    request: Request,
    settings: Settings,
    study_id: str,
    params: tuple,
    body: Callable[[Session, StudyRecord], BaseModel],
) -> Response:
    """A read of one study through the read cache, keyed by the study row's version and the request's ``params``;
    ``body`` builds the answer from the record when no body is cached under that key."""
    return cached_read(
        request,
        settings.database_url,
        params,
        lambda session: crud.get_study_version(session=session, study_id=study_id),
        lambda session, _: body(session, crud.get_study(session=session, study_id=study_id)),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyPublic,
    responses={
        200: {"model": StudyPublic, "description": "Replay: same Idempotency-Key and spec"},
        409: {"description": "Name taken, or Idempotency-Key reused with another spec"},
    },
)
def submit_study(
    response: Response,
    settings: SettingsDep,
    key: WriteKey,
    body: Annotated[StudyCreate, Body()],
    idempotency_key: IdempotencyKey = None,
) -> StudyPublic:
    """Validate and queue a study; a worker picks it up. ``Idempotency-Key`` makes retries safe."""
    spec = validate_spec(body.model_dump(exclude_none=True))
    check_trial_memory(spec, settings.max_trial_gb)
    check_resources(spec)
    owner = key.owner if key else None
    return submitted(
        response,
        settings.database_url,
        lambda session: crud.create_study(session=session, spec=spec, idempotency_key=idempotency_key, owner=owner),
        _one,
        lambda study: f"/v1/studies/{study.id}",
    )


@router.get("", response_model=StudiesPublic, responses=CACHED_RESPONSES)
def read_studies(
    request: Request,
    settings: SettingsDep,
    _: ReadKey,
    state: StateFilter = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Response:
    """Studies, newest first, with state and progress."""

    def body(session: Session, version: tuple) -> StudiesPublic:
        total, versions = version
        items = to_public(session, crud.get_studies(session=session, study_ids=[v[0] for v in versions]))
        return StudiesPublic(total=total, limit=limit, offset=offset, items=items)

    return cached_read(
        request,
        settings.database_url,
        ("studies", state, limit, offset),
        lambda session: crud.list_study_versions(session=session, limit=limit, offset=offset, state=state),
        body,
    )


@router.get("/{study_id}", response_model=StudyPublic, responses=_NOT_FOUND | CACHED_RESPONSES)
def read_study(request: Request, study_id: str, settings: SettingsDep, _: ReadKey) -> Response:
    """A study's spec, state, trial counts and best trial."""
    return _cached_read(request, settings, study_id, ("study",), _one)


_FORBIDDEN = {403: {"description": "Another key's study (only its submitter or an admin key may change it)"}}


@router.post(
    "/{study_id}/cancel", status_code=202, response_model=StudyPublic, responses=_NOT_FOUND | _CONFLICT | _FORBIDDEN
)
def cancel(study_id: str, settings: SettingsDep, key: WriteKey) -> StudyPublic:
    """Stop a study: a queued one at once, a running one within seconds. Finished trials are kept."""

    def write(session: Session) -> StudyRecord:
        check_owner(key, crud.get_study(session=session, study_id=study_id), "cancel")
        return crud.cancel_study(session=session, study_id=study_id)

    return written(settings.database_url, write, _one)


@router.post(
    "/{study_id}/resume", status_code=202, response_model=StudyPublic, responses=_NOT_FOUND | _CONFLICT | _FORBIDDEN
)
def resume(
    study_id: str, settings: SettingsDep, key: WriteKey, body: Annotated[ResumeRequest | None, Body()] = None
) -> StudyPublic:
    """Queue a cancelled or failed study again (or a finished one with a larger ``n_trials``)."""
    n_trials = body.n_trials if body else None

    def write(session: Session) -> StudyRecord:
        check_owner(key, crud.get_study(session=session, study_id=study_id), "resume")
        return crud.resume_study(session=session, study_id=study_id, n_trials=n_trials)

    return written(settings.database_url, write, _one)


@router.get("/{study_id}/trials", response_model=TrialsPublic, responses=_NOT_FOUND | CACHED_RESPONSES)
def read_trials(
    request: Request,
    study_id: str,
    settings: SettingsDep,
    _: ReadKey,
    state: TrialStateFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
    curves: bool = False,
) -> Response:
    """Trials by number with state, params, values and per-epoch objective; ``curves=true`` adds every curve."""

    def body(session: Session, record: StudyRecord) -> TrialsPublic:
        page = trials_page(session, record.name, limit, offset, state, curves)
        total, items = page if page is not None else (0, [])
        return TrialsPublic(total=total, limit=limit, offset=offset, items=items)

    return _cached_read(request, settings, study_id, ("trials", state, limit, offset, curves), body)


@router.get("/{study_id}/leaderboard", response_model=LeaderboardPublic, responses=_NOT_FOUND | CACHED_RESPONSES)
def read_leaderboard(
    request: Request,
    study_id: str,
    settings: SettingsDep,
    _: ReadKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    include_pruned: bool = False,
) -> Response:
    """The best trials first (by the first objective), ordered and limited in SQL."""

    def body(session: Session, record: StudyRecord) -> LeaderboardPublic:
        items = leaderboard(session, record.name, limit, include_pruned) or []  # None: no trial has started yet
        objective = record.spec["objective"]
        first = objective[0] if isinstance(objective, list) else objective
        return LeaderboardPublic(
            study_id=record.id, name=record.name, metric=first["metric"], direction=first["direction"], items=items
        )

    return _cached_read(request, settings, study_id, ("leaderboard", limit, include_pruned), body)
