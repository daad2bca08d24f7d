"""The study's record in Optuna: created or loaded by name with its spec, and summed up as an outcome (its reads are
:mod:`service.optuna_queries`').

The Optuna database is the engine's single record. The study's name is the spec's name and the canonical spec is
stored in its user attrs: running a name that exists with another spec is refused (:class:`NameTakenError`),
running it again with the same spec resumes it, and a resume may change only :data:`RESUMABLE_FIELDS`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces.spec import RESUMABLE_FIELDS, StudySpec, spec_changes

from .._optuna import fail_trial, open_storage
from ..errors import NameTakenError
from ..models import StudyState
from ..optuna_queries import best_trial, epochs_spent, load_study, stored_trials, study_counts
from ..trial_report import SUMMARY_METRICS, FailKind, StudyAttr, TrialAttr
from .factories import build_sampler
from .searcher import Resumable

__all__ = [
    "StudyOutcome",
    "create_or_load",
    "fail_orphaned_trials",
    "outcome",
]


@dataclass
class StudyOutcome:
    """How a run of the engine ended, and the study's counts at that point."""

    study_name: str
    state: StudyState  # SUCCEEDED | FAILED | CANCELLED
    reason: str | None
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | list[float] | None
    best_params: dict[str, Any] | None
    best_trial_number: int | None
    #: the best trial's validation and test numbers (``SUMMARY_METRICS``), shown beside its objective
    best_metrics: dict[str, Any] | None = None
    #: :func:`..optuna_queries.epochs_spent` when the run ended
    epochs_spent: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = StudyState(self.state).value
        return out


def create_or_load(storage_url: str, spec: StudySpec, resume: bool) -> tuple[optuna.Study, bool]:
    """The study named by the spec, created with the spec if new. Returns ``(study, created)``."""
    storage = open_storage(storage_url)
    canonical = spec.canonical()
    try:
        study = optuna.create_study(
            storage=storage, study_name=spec.name, directions=spec.directions, sampler=build_sampler(spec)
        )
        study.set_user_attr(StudyAttr.SPEC, canonical)
        with warnings.catch_warnings():  # set_metric_names is marked experimental; it is what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in spec.objectives])
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = load_study(storage_url, spec.name, sampler=build_sampler(spec))
    stored = study.user_attrs.get(StudyAttr.SPEC) or {}
    differing = spec_changes(stored, canonical)
    if differing:
        if not (resume and set(differing) <= RESUMABLE_FIELDS):
            raise NameTakenError(
                f"Study {spec.name!r} exists with a different spec (differs in: {', '.join(differing)}); "
                "choose another name" + ("" if resume else ", or resume it to change only its budget")
            )
        study.set_user_attr(StudyAttr.SPEC, canonical)
    return study, False


def fail_orphaned_trials(study: optuna.Study, reason: str) -> tuple[int, list[Resumable]]:
    """Sort the RUNNING trials a dead driver left (call only while holding the study's lease).

    A trial with a recorded checkpoint (user attr ``checkpoint``) stays RUNNING, to be continued from it; the
    others are FAIL (kind ``orphaned``). Returns ``(how many failed, the trials to continue)``.
    """
    n, resumable = 0, []
    for t in stored_trials(study, (TrialState.RUNNING,)):
        checkpoint = t.user_attrs.get(TrialAttr.CHECKPOINT)
        if checkpoint and checkpoint.get("uri"):
            resumable.append(Resumable(t, checkpoint["uri"]))
        else:
            n += fail_trial(study, t, {TrialAttr.FAIL_KIND: FailKind.ORPHANED, TrialAttr.FAIL_REASON: reason})
    return n, resumable


def outcome(study: optuna.Study, spec: StudySpec, state: StudyState | None, reason: str | None) -> StudyOutcome:
    """The run's outcome; ``state`` None: SUCCEEDED if the budget is met, else FAILED saying how far it got."""
    counts = study_counts(study)
    n_finished = counts.finished
    if state is None:
        state = StudyState.SUCCEEDED if n_finished >= spec.budget.n_trials else StudyState.FAILED  # type: ignore[operator]
        if state == StudyState.FAILED:
            reason = f"only {n_finished} of {spec.budget.n_trials} trials finished" + (f" ({reason})" if reason else "")
    best = best_trial(study, spec.directions)
    best_value = None if best is None else best.value if len(spec.objectives) == 1 else best.values
    return StudyOutcome(
        spec.name,
        state,
        reason,
        counts.complete,
        counts.pruned,
        counts.fail,
        best_value,
        best.params if best is not None else None,
        best.number if best is not None else None,
        {k: best.user_attrs.get(k) for k in SUMMARY_METRICS} if best is not None else None,
        epochs_spent(study),
    )
