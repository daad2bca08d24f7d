"""/v1/comparisons: submit, list, read, cancel, resume a fair optimizer comparison; its result and HTML report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from search_spaces import merge
from search_spaces.comparison import ComparisonSpec, load_comparison_data

from ...comparisons.lifecycle import (
    EXTEND,
    TUNE,
    cancel_comparison,
    create_comparison,
    list_comparisons,
    result_from_json,
    resume_comparison,
    studies_of,
)
from ...comparisons.report import render_html
from ...core.db import session_scope
from ...models import ComparisonRecord, StudyState
from ..deps import ReadKey, SettingsDep, WriteKey
from ..models import ArmPublic, ComparisonCreate, ComparisonPublic, ComparisonsPublic
from .studies import COMMON_RESPONSES, MAX_OFFSET, IdempotencyKey, _utc

router = APIRouter(prefix="/v1/comparisons", tags=["comparisons"], responses=COMMON_RESPONSES)

_NOT_FOUND: dict[int | str, dict] = {404: {"description": "Comparison not found (or, for its result, not done)"}}
_CONFLICT: dict[int | str, dict] = {409: {"description": "Not possible in the comparison's current state"}}


def validate_comparison(body: dict[str, Any]) -> ComparisonSpec:
    """Resolve a preset and validate; errors become 422 with each field's location under ``body``."""
    if "preset" in body:
        try:
            base = load_comparison_data(str(body["preset"]))
        except KeyError as e:
            raise RequestValidationError([{"loc": ("body", "preset"), "msg": str(e), "type": "value_error"}]) from None
        body = merge(base, {k: v for k, v in body.items() if k != "preset"})
    try:
        return ComparisonSpec.model_validate(body)
    except ValidationError as e:
        errors = [
            {"loc": ("body", *e_["loc"]), "msg": e_["msg"], "type": e_["type"]}
            for e_ in e.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


def to_public(session: Session, record: ComparisonRecord) -> ComparisonPublic:
    spec = ComparisonSpec.model_validate(record.spec)
    studies = studies_of(session, record.id)
    result = result_from_json(record.result) if record.result else None
    arms = []
    for arm in spec.arms:
        for bs in spec.batch_sizes:
            mine = [s for s in studies if s.arm == arm.name and s.batch_size == bs]
            tune = next((s for s in mine if s.role == TUNE), None)
            # every tuning repeat and range-check extension, each study's count as stored (no trial is read)
            tuning = [s for s in mine if s.role in (TUNE, EXTEND)]
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
                    rerun=summary.to_dict() if summary else None,
                )
            )
    verdicts: dict[int, list[dict[str, Any]]] = {}
    for v in result.verdicts() if result else []:
        verdicts.setdefault(v.batch_size, []).append(
            {
                "arm": v.arm,
                "against": v.against,
                "difference": v.difference.to_dict() if v.difference else None,
                "verdict": v.verdict,
                "reason": v.reason,
            }
        )
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
        created_at=_utc(record.created_at),
        updated_at=_utc(record.updated_at),
        finished_at=_utc(record.finished_at),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ComparisonPublic,
    responses={
        200: {"model": ComparisonPublic, "description": "Replay: same Idempotency-Key and spec"},
        409: {"description": "Name taken (the comparison's or one of its studies'), or Idempotency-Key reused"},
    },
)
def submit_comparison(
    response: Response,
    settings: SettingsDep,
    key: WriteKey,
    body: Annotated[ComparisonCreate, Body()],
    idempotency_key: IdempotencyKey = None,
) -> ComparisonPublic:
    """Validate and queue a comparison: one tuning study per arm × batch size, re-runs and the result after."""
    spec = validate_comparison(body.model_dump(exclude_none=True))
    # committed before the response goes out, as a study's submit
    with session_scope(settings.database_url) as session:
        record, created = create_comparison(
            session=session, spec=spec, idempotency_key=idempotency_key, owner=key.fingerprint if key else None
        )
        session.flush()
        public = to_public(session, record)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/comparisons/{public.id}"
    return public


@router.get("", response_model=ComparisonsPublic)
def read_comparisons(
    settings: SettingsDep,
    _: ReadKey,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ComparisonsPublic:
    """Comparisons, newest first."""
    with session_scope(settings.database_url) as session:
        total, records = list_comparisons(session=session, limit=limit, offset=offset)
        items = [to_public(session, r) for r in records]
    return ComparisonsPublic(total=total, limit=limit, offset=offset, items=items)


@router.get("/{comparison_id}", response_model=ComparisonPublic, responses=_NOT_FOUND)
def read_comparison(comparison_id: str, settings: SettingsDep, _: ReadKey) -> ComparisonPublic:
    """State, phase, arms (studies, epochs spent, tuned params, re-run summary) and verdicts per batch size."""
    with session_scope(settings.database_url) as session:
        return to_public(session, ComparisonRecord.find_or_raise_by_id(session, comparison_id))


@router.post(
    "/{comparison_id}/cancel", status_code=202, response_model=ComparisonPublic, responses=_NOT_FOUND | _CONFLICT
)
def cancel(comparison_id: str, settings: SettingsDep, _: WriteKey) -> ComparisonPublic:
    """Stop a comparison and its studies; finished trials are kept."""
    with session_scope(settings.database_url) as session:
        record = cancel_comparison(session=session, comparison_id=comparison_id)
        session.flush()
        return to_public(session, record)


@router.post(
    "/{comparison_id}/resume", status_code=202, response_model=ComparisonPublic, responses=_NOT_FOUND | _CONFLICT
)
def resume(comparison_id: str, settings: SettingsDep, _: WriteKey) -> ComparisonPublic:
    """Carry on a cancelled or failed comparison: its unfinished studies are queued again."""
    with session_scope(settings.database_url) as session:
        record = resume_comparison(session=session, comparison_id=comparison_id)
        session.flush()
        return to_public(session, record)


def _result(database_url: str, comparison_id: str) -> dict[str, Any]:
    with session_scope(database_url) as session:
        record = ComparisonRecord.find_or_raise_by_id(session, comparison_id)
        state, phase, result = record.state, record.phase, record.result
    if result is None:
        raise HTTPException(404, f"Comparison is {state} ({phase}); its result comes once it SUCCEEDED")
    return result


@router.get("/{comparison_id}/result", responses=_NOT_FOUND)
def read_result(comparison_id: str, settings: SettingsDep, _: ReadKey) -> dict[str, Any]:
    """The result's data (per-trial records with curves, re-runs, importances): what the report draws."""
    return _result(settings.database_url, comparison_id)


@router.get("/{comparison_id}/report", response_class=HTMLResponse, responses=_NOT_FOUND)
def read_report(comparison_id: str, settings: SettingsDep, _: ReadKey) -> HTMLResponse:
    """The report as one self-contained HTML page (plots inline)."""
    return HTMLResponse(render_html(result_from_json(_result(settings.database_url, comparison_id))))
