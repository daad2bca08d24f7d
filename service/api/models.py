"""Request and response models of the REST API (pydantic v2), with examples for the OpenAPI docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from search_spaces.spec import MAX_N_TRIALS, StudySpec

__all__ = [
    "Best",
    "LeaderboardEntry",
    "LeaderboardPublic",
    "Progress",
    "ResumeRequest",
    "SearchSpacePublic",
    "SearchSpacesPublic",
    "StudiesPublic",
    "StudyCreate",
    "StudyPublic",
    "TrialPublic",
    "TrialsPublic",
]


class StudyCreate(BaseModel):
    """A study spec (see ``StudySpec``), or ``preset: NAME`` plus fields that override the preset."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"preset": "mnist1d-quick", "name": "my-first-study"},
                StudySpec.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
            ]
        },
    )

    preset: str | None = Field(default=None, description="A preset from GET /v1/search-spaces")
    name: str | None = Field(default=None, description="Unique study name (a preset's name when left out)")


class Progress(BaseModel):
    n_trials: int
    finished: int = Field(description="COMPLETE + PRUNED: what the budget counts")
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    fraction: float


class Best(BaseModel):
    number: int
    value: float | None
    params: dict[str, Any]


class StudyPublic(BaseModel):
    id: str
    name: str
    state: str = Field(description="QUEUED | RUNNING | SUCCEEDED | FAILED | CANCELLED")
    cancel_requested: bool
    spec: dict[str, Any]
    progress: Progress
    best: Best | None
    error: str | None
    owner: str | None = Field(description="fingerprint of the API key that submitted it")
    worker_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class StudiesPublic(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[StudyPublic]


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_trials: int | None = Field(default=None, ge=1, le=MAX_N_TRIALS, description="raise the budget (optional)")


class TrialPublic(BaseModel):
    number: int
    state: str = Field(description="COMPLETE | PRUNED | FAIL | RUNNING | WAITING")
    params: dict[str, Any]
    values: list[float | None] | None
    intermediate_values: dict[int, float | None] = Field(description="objective per epoch")
    epochs: int | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    user_attrs: dict[str, Any] = Field(description="fail_reason, diverged, images_per_s, ...; curves with ?curves=true")


class TrialsPublic(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TrialPublic]


class LeaderboardEntry(BaseModel):
    rank: int
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int | None
    best_test_acc: float | None = None
    final_test_acc: float | None = None
    diverged: bool | None = None
    wall_seconds: float | None = None


class LeaderboardPublic(BaseModel):
    study_id: str
    name: str
    metric: str
    direction: str
    items: list[LeaderboardEntry]


class SearchSpacePublic(BaseModel):
    name: str
    description: str
    optimizer: str
    workload: dict[str, Any]
    parameters: list[str]
    sampler: str
    scheduler: str
    n_trials: int


class SearchSpacesPublic(BaseModel):
    items: list[SearchSpacePublic]
