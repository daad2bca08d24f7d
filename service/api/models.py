"""Request and response models of the REST API (pydantic v2), with examples for the OpenAPI docs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from optuna.trial import TrialState
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from search_spaces.spec import MAX_ENQUEUED, MAX_N_TRIALS, StudySpec

from ..comparisons.stats import Verdict
from ..models import ComparisonPhase, StudyState
from ..optuna_queries import StudyCounts

__all__ = [
    "ArmPublic",
    "Best",
    "ComparisonCreate",
    "ComparisonPublic",
    "ComparisonsPublic",
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


def _utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone, which would not be RFC 3339."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


#: A time the service stored (always UTC), given its zone when the database dropped it.
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def _spec_field(name: str) -> str:
    return StudySpec.model_fields[name].description or f"the spec's {name} (see the StudySpec schema)"


class StudyCreate(BaseModel):
    """A study spec, or ``preset: NAME`` with fields that override the preset (mappings merge key by key;
    ``search_space`` is replaced whole). The whole is validated as a spec: field errors come back as 422."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"preset": "mnist1d-quick", "name": "my-first-study"},
                {
                    "preset": "mnist1d-quick",
                    "name": "quick-random",
                    "sampler": {"name": "random"},
                    "budget": {"n_trials": 4},
                },
                StudySpec.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
            ]
        },
    )

    preset: str | None = Field(default=None, description="A preset from GET /v1/search-spaces to start from")
    name: str | None = Field(default=None, description="Unique study name (a preset's name when left out)")
    description: str | None = Field(default=None, max_length=2_000)
    workload: dict[str, Any] | None = Field(
        default=None, description="task, dataset, model, epochs, batch_size and any other tvlars.train config key"
    )
    optimizer: str | None = Field(default=None, description="a registered optimizer (GET /v1/workloads lists them)")
    search_space: dict[str, dict[str, Any]] | None = Field(
        default=None, description="key → {type: float|int|categorical, low, high, log, step, choices}"
    )
    fixed: dict[str, Any] | None = Field(default=None, description="trial config keys held constant")
    objective: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None, description="{metric, direction}, or a list of them for a multi-objective study"
    )
    sampler: dict[str, Any] | None = Field(
        default=None, description="{name, seed, options}: options per sampler are listed in search_spaces.algorithms"
    )
    scheduler: dict[str, Any] | None = Field(
        default=None, description="{name, grace_period, reduction_factor, max_t, options}"
    )
    budget: dict[str, Any] | None = Field(default=None, description="{n_trials, max_concurrent, max_failed}")
    resources: dict[str, Any] | None = Field(default=None, description="{cpu, gpu} per trial")
    enqueue: list[dict[str, Any]] | None = Field(
        default=None, max_length=MAX_ENQUEUED, description="parameter sets to try first"
    )
    seed: int | None = Field(default=None, description=_spec_field("seed"))
    vary_seed: bool | None = Field(default=None, description=_spec_field("vary_seed"))


class Progress(BaseModel):
    n_trials: int
    finished: int = Field(description="COMPLETE + PRUNED: what the budget counts")
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    fraction: float

    @classmethod
    def of(cls, counts: StudyCounts, n_trials: int) -> Progress:
        """A study's progress from its trial counts and its budget's ``n_trials``."""
        return cls(
            n_trials=n_trials,
            finished=counts.finished,
            complete=counts.complete,
            pruned=counts.pruned,
            failed=counts.fail,
            running=counts.running,
            waiting=counts.waiting,
            fraction=min(1.0, counts.finished / n_trials) if n_trials else 0.0,
        )


class Best(BaseModel):
    number: int
    value: float | None = Field(description="the objective (validation by default) of the best trial")
    params: dict[str, Any]
    best_val_acc: float | None = None
    test_acc_at_best_val: float | None = Field(default=None, description="its test accuracy at best validation")
    best_test_acc: float | None = None


class StudyPublic(BaseModel):
    id: str
    name: str
    state: StudyState
    cancel_requested: bool
    spec: dict[str, Any]
    progress: Progress
    best: Best | None
    error: str | None
    owner: str | None = Field(
        description="who submitted it: a salted hash of its API key (12 hex digits; null without keys)"
    )
    worker_id: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


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
    state: str = Field(description=" | ".join(s.name for s in TrialState))
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
    epochs: int | None = Field(description="epochs reached (a PRUNED trial's value is from this epoch)")
    best_val_acc: float | None = Field(default=None, description="best validation accuracy over epochs")
    test_acc_at_best_val: float | None = Field(
        default=None, description="test accuracy at the epoch of best validation accuracy: the number to publish"
    )
    best_test_acc: float | None = Field(default=None, description="best test accuracy over epochs (paper protocol)")
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


# -- comparisons ------------------------------------------------------------------------------------------------------


class ComparisonCreate(BaseModel):
    """A comparison spec, or ``preset: NAME`` (see ``search_spaces/comparisons/``) with overriding fields (mappings
    merge key by key; lists such as ``arms`` are replaced whole). Field errors come back as 422."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"preset": "compare-mnist1d-cpu"},
                {
                    "preset": "compare-mnist1d-cpu",
                    "name": "small",
                    "batch_sizes": [256, 4096],
                    "budget": {"epochs": 40},
                    "tuning_repeats": 1,
                },
            ]
        },
    )

    preset: str | None = Field(default=None, description="A comparison preset to start from")
    name: str | None = Field(default=None, description="Unique comparison name (the preset's when left out)")
    description: str | None = Field(default=None, max_length=2_000)
    workload: dict[str, Any] | None = Field(default=None, description="task, dataset, model, epochs (no batch_size)")
    arms: list[dict[str, Any]] | None = Field(
        default=None, description="[{optimizer, label, search_space, fixed, lr_scaling, lr_center}]; first under test"
    )
    batch_sizes: list[int] | None = Field(default=None, description="The batch-size ladder, small to large")
    budget: dict[str, Any] | None = Field(
        default=None, description="{epochs, n_trials, max_concurrent, max_failed, extension_epochs}: epochs bind"
    )
    sampler: dict[str, Any] | None = Field(default=None, description="{name, seed, options}")
    scheduler: dict[str, Any] | None = Field(
        default=None, description="{name, grace_period, ...}: none (default) or hyperband, whose rungs compare peers"
    )
    objective: dict[str, Any] | None = Field(default=None, description="{metric, direction}: what tuning selects on")
    rerun: dict[str, Any] | None = Field(default=None, description="{top_k, seeds}")
    target_val_acc: float | None = Field(default=None, description="For time to target")
    lr_decades: float | None = Field(default=None, description="Width of every arm's log LR range")
    resources: dict[str, Any] | None = Field(default=None, description="{cpu, gpu} per trial")
    seed: int | None = Field(default=None, description="Tuning trial n trains with seed + n")
    tuning_repeats: int | dict[str, int] | None = Field(
        default=None, description="Independent tunings per arm × batch size: n, or {min, max} for looks in rounds"
    )
    margin: float | None = Field(default=None, description="δ in percentage points for 'equivalent' (default 1.0)")
    primary: list[str] | None = Field(
        default=None, description="Arm labels whose verdicts share α/m; others are secondary (uncorrected)"
    )
    range_check: str | dict[str, Any] | None = Field(
        default=None,
        description="{mode: extend|flag, max_extensions} or the mode alone: an optimum in the outer 10 % of a range",
    )
    assumed_epoch_s: float | None = Field(default=None, description="The plan's seconds per epoch without history")
    assumed_sd_pp: float | None = Field(default=None, description="The plan's spread (pp) without history")
    dry_run: bool = Field(
        default=False,
        description="true: answer 200 with the plan (spending, wall time, each verdict's MDD); nothing is stored or "
        "queued and an Idempotency-Key has no effect",
    )
    workers: int | None = Field(default=None, ge=1, le=1024, description="The plan's workers (default 1)")

    @field_validator("budget")
    @classmethod
    def _no_extension_epochs(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v and v.get("extension_epochs") is not None:
            raise ValueError(
                "budget.extension_epochs is no longer used: a range-check extension spends what a tuning study "
                "does (budget.epochs); drop it (range_check.max_extensions bounds the extensions)"
            )
        return v


# The models of a comparison's numbers are read from :mod:`service.comparisons.stats`'s dataclasses (``Summary``,
# ``Look``, ``Difference``) and :mod:`service.comparisons.result`'s ``VerdictRecord`` by attribute: the same fields
# (tests/unit/service/api/test_public_models.py checks), with their descriptions for the OpenAPI docs.
_FROM_STATS = ConfigDict(from_attributes=True)


class SummaryPublic(BaseModel):
    """Re-run scores (test accuracy at best validation) over tuning repeats × seeds: mean, std, 95 % bootstrap CI."""

    model_config = _FROM_STATS

    n_seeds: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    n_repeats: int = Field(default=1, description="tuning repeats whose winner was re-run")
    repeat_means: list[float] = Field(default_factory=list, description="each repeat's winner's mean over seeds")


class ArmPublic(BaseModel):
    optimizer: str
    label: str
    batch_size: int
    studies: list[str] = Field(
        description="study ids: its tuning studies (one per repeat), range-check extensions, then re-run studies"
    )
    state: StudyState = Field(description="the first tuning study's state")
    epochs_budget: int = Field(description="the epoch budgets of its tuning studies (repeats and extensions), summed")
    epochs_spent: int = Field(
        description="epochs of every tuning trial (every repeat and range-check extension), pruned, failed and "
        "running included, as each study record stores it"
    )
    best_params: dict[str, Any] | None
    rerun: SummaryPublic | None


class LookPublic(BaseModel):
    """One look at a verdict (R4): after ``n`` tuning repeats, at the α spent there."""

    model_config = _FROM_STATS

    n: int = Field(description="tuning repeats at this look")
    alpha: float = Field(description="α spent at this look (its share of α/m, or of α for a secondary verdict)")
    mean: float = Field(description="d̄: mean over the n repeats of d_r (arm minus against, a fraction)")
    ci_low: float | None = Field(description="d̄ − t(1 − α/2, n − 1)·s/√n")
    ci_high: float | None
    p_value: float | None = Field(description="paired t over repeats, two-sided")
    p_equivalence: float | None = Field(description="TOST within ±margin (equivalent ⇔ p < α/2)")
    verdict: Verdict = Field(description="the verdict this look gave")


class DifferencePublic(BaseModel):
    """Arm minus against at one batch size, as its verdict reads it (at the look that decided, else the last)."""

    model_config = _FROM_STATS

    mean: float = Field(description="d̄ over the repeats of that look (fractions: 0.01 is 1 pp)")
    sd: float | None = Field(description="SD of d_r over those repeats")
    n: int = Field(description="tuning repeats at that look")
    ci_low: float | None = Field(description="t interval at alpha: d̄ ± t(1 − α/2, n − 1)·s/√n")
    ci_high: float | None
    p_value: float | None = Field(description="paired t over repeats (n − 1 df), two-sided")
    p_equivalence: float | None = Field(description="TOST within ±margin")
    alpha: float = Field(description="α spent at that look")
    margin: float = Field(description="δ as a fraction (the spec's margin / 100)")
    look: int | None = Field(description="repeats at the look that decided; None: no look decided")
    mdd: float | None = Field(
        None, description="minimum detectable difference at repeats_max (80 % power, last look's α, pooled SD)"
    )
    mdd_sd: float | None = Field(None, description="the SD pooled over the batch size's verdicts")
    mdd_df: int | None = Field(None, description="its degrees of freedom")
    repeat_differences: list[float] = Field(default_factory=list, description="d_r per repeat")
    n_seeds: int = Field(0, description="re-run seeds per repeat shared by both arms")
    boot_low: float | None = Field(None, description="descriptive 95 % two-level bootstrap interval (decides nothing)")
    boot_high: float | None = None
    looks: list[LookPublic] = Field(default_factory=list, description="every look, in order, up to the deciding one")


class VerdictPublic(BaseModel):
    """The arm under test against another at one batch size (its batch size is the key it is listed under)."""

    model_config = _FROM_STATS

    arm: str
    against: str
    difference: DifferencePublic | None = Field(description="None when a rule could not be checked")
    verdict: Verdict = Field(description="better | worse | equivalent | undecided | inconclusive[: search failure]")
    reason: str | None = Field(default=None, description="why a verdict is inconclusive")
    primary: bool = Field(default=True, description="tested at α/m (primary) or at α uncorrected (secondary)")
    notes: list[str] = Field(default_factory=list, description="within the margin; secondary; undecided so far")


class ComparisonPublic(BaseModel):
    id: str
    name: str
    state: StudyState
    phase: ComparisonPhase = Field(description="per round: tune → (extend) → rerun, then the next round or done")
    spec: dict[str, Any]
    progress: dict[str, int] = Field(description="studies total and finished")
    arms: list[ArmPublic]
    verdicts: dict[int, list[VerdictPublic]] = Field(description="per batch size: arms[0] against each other arm")
    error: str | None
    owner: str | None = Field(
        description="who submitted it: a salted hash of its API key (12 hex digits; null without keys)"
    )
    created_at: UtcDatetime
    updated_at: UtcDatetime
    finished_at: UtcDatetime | None


class ComparisonsPublic(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ComparisonPublic]


# -- workloads -----------------------------------------------------------------------------------------------------


class WorkloadPublic(BaseModel):
    kind: str = Field(description="dataset | model | task")
    name: str = Field(description="what a spec's workload says")
    source: str = Field(description="'built-in', or the plugin's distribution and version")
    description: str
    options: dict[str, Any] = Field(
        description="options and their defaults (datasets: dataset_options, models: model_options, tasks: trial keys)"
    )
    required: list[str] = Field(description="options without a default")
    bounds: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="options declared with bounds (Annotated[int, tvlars.registry.Bounds(ge, le, max_length)]): "
        "values outside them are a 422",
    )


class HyperparameterPublic(BaseModel):
    type: str = Field(description="float, int, bool; 'float | None' where null is allowed")
    default: Any
    argument: str = Field(description="the constructor argument it sets")
    bounds: dict[str, float] = Field(description="ge / gt / le / lt where bounded")
    search: dict[str, Any] | None = Field(
        description="its default comparison range {low, high, log}; None: not searched"
    )
    help: str


class OptimizerPublic(BaseModel):
    name: str = Field(description="what a spec's optimizer says")
    optimizer: str = Field(description="the optimizer class or function its declaration builds")
    source: str
    description: str
    hyperparameters: dict[str, Any] = Field(description="each trial key's default")
    trial_keys: list[str] = Field(description="the trial keys it takes; any other optimizer key is a 422")
    options: dict[str, HyperparameterPublic] = Field(description="each trial key: type, bounds, argument, range")
    recipe: dict[str, Any] | None = Field(description="lr_scaling, warmup_fraction, lr_schedule where not plain")
    references: dict[int, dict[str, Any]] = Field(description="its reference configuration at each published size")
    contains: list[str] = Field(description="optimizers its search space contains (TVLARS at λ → 0: LARS)")


class BrokenWorkloadPublic(BaseModel):
    kind: str
    name: str
    source: str
    error: str


class WorkloadsPublic(BaseModel):
    datasets: list[WorkloadPublic]
    models: list[WorkloadPublic]
    tasks: list[WorkloadPublic]
    optimizers: list[OptimizerPublic]
    broken: list[BrokenWorkloadPublic] = Field(description="installed plugins that cannot be used, with their error")
