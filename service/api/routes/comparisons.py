"""/v1/comparisons: submit, list, read, cancel, resume a fair optimizer comparison; its result and HTML report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from search_spaces import merge
from search_spaces.comparison import ComparisonSpec, expand, load_comparison_data
from search_spaces.spec import StudySpec

from ...comparisons.plan import plan
from ...comparisons.records import (
    TUNING_ROLES,
    arm_studies,
    cancel_comparison,
    comparison_version,
    create_comparison,
    get_comparisons,
    list_comparison_versions,
    resume_comparison,
    studies_of,
)
from ...comparisons.report import render_html
from ...comparisons.reruns import rerun_spec
from ...comparisons.result import result_from_json
from ...core.config import Settings
from ...core.db import session_scope
from ...core.jsondata import jsonable
from ...models import ComparisonPhase, ComparisonRecord, StudyState
from ..cache import CACHED_RESPONSES, cached_read
from ..deps import Offset, ReadKey, SettingsDep, WriteKey, check_owner
from ..errors import COMMON_RESPONSES, conflict, not_found, validate_body
from ..limits import check_resources, check_trial_memory
from ..models import ArmPublic, ComparisonCreate, ComparisonPublic, ComparisonsPublic, SummaryPublic, VerdictPublic
from ..writes import IdempotencyKey, submitted, written

router = APIRouter(prefix="/v1/comparisons", tags=["comparisons"], responses=COMMON_RESPONSES)

_NOT_FOUND = not_found("Comparison not found (or, for its result, not done)")
_CONFLICT = conflict("Not possible in the comparison's current state")


def _resolve(body: dict[str, Any]) -> dict[str, Any]:
    """``preset: NAME`` expanded: the comparison preset, overridden by the other fields."""
    if "preset" not in body:
        return body
    return merge(load_comparison_data(str(body["preset"])), {k: v for k, v in body.items() if k != "preset"})


def validate_comparison(body: dict[str, Any]) -> ComparisonSpec:
    """Resolve a preset and validate; errors become 422 with each field's location under ``body``."""
    return validate_body(ComparisonSpec, body, _resolve)


def check_studies(spec: ComparisonSpec, max_trial_gb: float | None) -> None:
    """What the comparison's studies will need, checked at submit (each a 422): every tuning study's trials fit in
    memory and in some node's resources, and every re-run study it may queue is a valid spec (its tuned config
    taken at the search space's lower corner; the comparison's own validation covers its extension studies)."""
    for study in expand(spec, repeats=[spec.repeats_max - 1]):  # the last repeat: its seeds are largest
        tuned = StudySpec.model_validate(study.spec)
        check_trial_memory(tuned, max_trial_gb)
        check_resources(tuned)
        try:
            rerun_spec(tuned, tuned.lower_corner(), spec.rerun.top_k, spec.rerun.seeds)
        except (ValidationError, ValueError) as e:
            msg = f"arm {study.arm.name} at batch size {study.batch_size}: its re-run study would be invalid: {e}"
            raise RequestValidationError([{"loc": ("body", "rerun"), "msg": msg, "type": "derived_study"}]) from None


def to_public(session: Session, record: ComparisonRecord) -> ComparisonPublic:
    spec = ComparisonSpec.model_validate(record.spec)
    studies = studies_of(session, record.id)
    result = result_from_json(record.result) if record.result else None
    arms = []
    for arm, bs, mine in arm_studies(spec, studies):
        tune = next((s for s in mine if s.role == ComparisonPhase.TUNE), None)
        # every tuning repeat and range-check extension, each study's count as stored (no trial is read)
        tuning = [s for s in mine if s.role in TUNING_ROLES]
        done = result.arm(arm.name, bs) if result else None
        summary = done.rerun if done else None
        best = done.best_params if done else ((tune.outcome or {}).get("best_params") if tune else None)
        arms.append(
            ArmPublic(
                optimizer=arm.optimizer,
                label=arm.name,
                batch_size=bs,
                studies=[s.id for s in mine],
                state=tune.state if tune else StudyState.QUEUED,
                epochs_budget=sum(s.spec["budget"]["epochs"] for s in tuning),
                epochs_spent=sum(s.epochs_spent for s in tuning),
                best_params=best,
                rerun=SummaryPublic.model_validate(summary) if summary else None,
            )
        )
    verdicts: dict[int, list[VerdictPublic]] = {}
    for v in result.verdicts() if result else []:
        verdicts.setdefault(v.batch_size, []).append(VerdictPublic.model_validate(v))
    return ComparisonPublic(
        id=record.id,
        name=record.name,
        state=record.state,
        phase=record.phase,
        spec=record.spec,
        progress={
            "studies": len(studies),
            "finished": sum(StudyState(s.state).is_finished for s in studies),
            "succeeded": sum(s.state == StudyState.SUCCEEDED for s in studies),
        },
        arms=arms,
        verdicts=verdicts,
        error=record.error,
        owner=record.owner,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ComparisonPublic,
    responses={
        200: {
            "model": ComparisonPublic,
            "description": "Replay: same Idempotency-Key and spec; or, with dry_run, the plan (nothing stored)",
        },
        409: {"description": "Name taken (the comparison's or one of its studies'), or Idempotency-Key reused"},
    },
)
def submit_comparison(
    response: Response,
    settings: SettingsDep,
    key: WriteKey,
    body: Annotated[ComparisonCreate, Body()],
    idempotency_key: IdempotencyKey = None,
    workers: Annotated[int | None, Query(ge=1, le=1024, description="The plan's workers (dry run)")] = None,
) -> ComparisonPublic | JSONResponse:
    """Validate and queue a comparison: one tuning study per arm × batch size, re-runs and the result after.

    With ``dry_run: true``: validate and answer 200 with the plan (:mod:`service.comparisons.plan`) for ``workers``
    workers (the query parameter or the body's field, default 1); nothing is stored or queued, and an
    ``Idempotency-Key`` has no effect."""
    data = body.model_dump(exclude_none=True, exclude={"dry_run", "workers"})
    spec = validate_comparison(data)
    check_studies(spec, settings.max_trial_gb)
    if body.dry_run:
        with session_scope(settings.database_url) as session:
            planned = plan(session, spec, workers or body.workers or 1)
        return JSONResponse(jsonable(planned.to_dict()), status_code=status.HTTP_200_OK)
    owner = key.owner if key else None
    return submitted(
        response,
        settings.database_url,
        lambda session: create_comparison(session=session, spec=spec, idempotency_key=idempotency_key, owner=owner),
        to_public,
        lambda comparison: f"/v1/comparisons/{comparison.id}",
    )


@router.get("", response_model=ComparisonsPublic, responses=CACHED_RESPONSES)
def read_comparisons(
    request: Request,
    settings: SettingsDep,
    _: ReadKey,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Offset = 0,
) -> Response:
    """Comparisons, newest first."""

    def body(session: Session, version: tuple) -> ComparisonsPublic:
        total, versions = version
        records = get_comparisons(session=session, comparison_ids=[v[0] for v in versions])
        items = [to_public(session, r) for r in records]
        return ComparisonsPublic(total=total, limit=limit, offset=offset, items=items)

    return cached_read(
        request,
        settings.database_url,
        ("comparisons", limit, offset),
        lambda session: list_comparison_versions(session=session, limit=limit, offset=offset),
        body,
    )


def _cached_read(
    request: Request,
    settings: Settings,
    comparison_id: str,
    params: tuple,
    body: Callable[[Session, ComparisonRecord], ComparisonPublic | bytes],
    media_type: str = "application/json",
) -> Response:
    """A read of one comparison through the read cache, keyed by its version (its row's and its studies') and the
    request's ``params``; ``body`` builds the answer from the record when no body is cached under that key."""
    return cached_read(
        request,
        settings.database_url,
        params,
        lambda session: comparison_version(session=session, comparison_id=comparison_id),
        lambda session, _: body(session, ComparisonRecord.find_or_raise_by_id(session, comparison_id)),
        media_type,
    )


@router.get("/{comparison_id}", response_model=ComparisonPublic, responses=_NOT_FOUND | CACHED_RESPONSES)
def read_comparison(request: Request, comparison_id: str, settings: SettingsDep, _: ReadKey) -> Response:
    """State, phase, arms (studies, epochs spent, tuned params, re-run summary) and verdicts per batch size."""
    return _cached_read(request, settings, comparison_id, ("comparison",), to_public)


_FORBIDDEN = {403: {"description": "Another key's comparison (only its submitter or an admin key may change it)"}}


@router.post(
    "/{comparison_id}/cancel",
    status_code=202,
    response_model=ComparisonPublic,
    responses=_NOT_FOUND | _CONFLICT | _FORBIDDEN,
)
def cancel(comparison_id: str, settings: SettingsDep, key: WriteKey) -> ComparisonPublic:
    """Stop a comparison and its studies; finished trials are kept."""

    def write(session: Session) -> ComparisonRecord:
        check_owner(key, ComparisonRecord.find_or_raise_by_id(session, comparison_id), "cancel")
        return cancel_comparison(session=session, comparison_id=comparison_id)

    return written(settings.database_url, write, to_public)


@router.post(
    "/{comparison_id}/resume",
    status_code=202,
    response_model=ComparisonPublic,
    responses=_NOT_FOUND | _CONFLICT | _FORBIDDEN,
)
def resume(comparison_id: str, settings: SettingsDep, key: WriteKey) -> ComparisonPublic:
    """Carry on a cancelled or failed comparison: its unfinished studies are queued again."""

    def write(session: Session) -> ComparisonRecord:
        check_owner(key, ComparisonRecord.find_or_raise_by_id(session, comparison_id), "resume")
        return resume_comparison(session=session, comparison_id=comparison_id)

    return written(settings.database_url, write, to_public)


def _result(record: ComparisonRecord) -> dict[str, Any]:
    if record.result is None:
        raise HTTPException(404, f"Comparison is {record.state} ({record.phase}); its result comes once it SUCCEEDED")
    return record.result


@router.get("/{comparison_id}/result", responses=_NOT_FOUND | CACHED_RESPONSES)
def read_result(request: Request, comparison_id: str, settings: SettingsDep, _: ReadKey) -> Response:
    """The result's data (per-trial records with curves, re-runs, importances): what the report draws."""
    return _cached_read(
        request, settings, comparison_id, ("result",), lambda _, record: JSONResponse(_result(record)).body
    )


@router.get("/{comparison_id}/report", response_class=HTMLResponse, responses=_NOT_FOUND | CACHED_RESPONSES)
def read_report(request: Request, comparison_id: str, settings: SettingsDep, _: ReadKey) -> Response:
    """The report as one self-contained HTML page (plots inline)."""
    return _cached_read(
        request,
        settings,
        comparison_id,
        ("report",),
        lambda _, record: render_html(result_from_json(_result(record))).encode(),
        "text/html; charset=utf-8",
    )
