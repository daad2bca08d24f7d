"""Run one study: its spec in, a complete and truthful Optuna study out.

The pieces: :mod:`.records` (the study in Optuna, counts, outcome), :mod:`.lease` (one driver per study),
:mod:`.factories` (sampler, scheduler, distributions), :mod:`.searcher` (asks and tells Optuna for Ray Tune),
:mod:`.runners` (warm trial runners, for studies without a scheduler) and :mod:`.ray_setup` (Ray and the Tuner).
A driver that died leaves a stale lease; the next run continues the trials it left RUNNING from their latest
checkpoints (the same Optuna trials), fails those that had none, and runs only what the budget still lacks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from search_spaces.spec import StudySpec

from ..errors import FencedError, InvalidSpecError
from ..models import StudyState
from ..optuna_queries import StudyCounts, epochs_spent, study_counts
from ..trial_report import FailKind, TrialAttr
from .factories import CHECKPOINTS_KEPT, build_distributions
from .lease import Lease
from .lease import lease_ttl_s as _lease_ttl
from .ray_setup import StopPoller, ensure_ray, fit, resources_unavailable, storage_location
from .records import StudyOutcome, create_or_load, fail_orphaned_trials, outcome

__all__ = ["run_study"]

log = logging.getLogger(__name__)


def _checkpoint_interval(given: float | None) -> float:
    from ..core.config import get_settings

    return given if given is not None else get_settings().checkpoint_interval_s


def run_study(
    spec: StudySpec | dict[str, Any],
    storage_url: str,
    *,
    resume: bool = False,
    should_cancel: Callable[[], bool] | None = None,
    on_progress: Callable[[StudyCounts], None] | None = None,
    ray_address: str | None = None,
    results_dir: str | os.PathLike | None = None,
    lease_ttl_s: float | None = None,
    storage_path: str | None = None,
    fenced: Callable[[], bool] | None = None,
    driver: str | None = None,
    checkpoint_interval_s: float | None = None,
) -> StudyOutcome:
    """Run (or resume) a study to the end of its budget.

    Args:
        spec: a :class:`StudySpec` or its data.
        storage_url: SQLAlchemy URL of the Optuna storage (``sqlite:///...``, ``postgresql+psycopg://...``).
        resume: allow the stored spec's ``budget`` to differ (to extend a study); other fields must match.
        should_cancel: polled about every 0.5 s; True stops running trials (FAIL, kind ``cancelled``) and ends
            the run CANCELLED, keeping every finished trial.
        on_progress: called with the study's counts after each trial ends, ``epochs_spent`` among them
            (:func:`..optuna_queries.epochs_spent`).
        ray_address: a Ray cluster to join (default: ``RAY_ADDRESS``, else a local Ray).
        results_dir: where Ray Tune keeps its per-run files (default: a folder under the temp dir).
        storage_path: where trial checkpoints go, a folder every Ray node can reach or a URI (``s3://...``);
            default ``TVLARS_CHECKPOINT_PATH``, else ``results_dir``.
        lease_ttl_s: seconds after which a silent driver's lease counts as stale (default 30; ``TVLARS_LEASE_TTL_S``).
        checkpoint_interval_s: least seconds between two checkpoints of a trial on warm runners (0: every epoch;
            default ``TVLARS_CHECKPOINT_INTERVAL_S``, 10).
        fenced: polled before every write to the study: True when this driver's caller learned it lost the study
            (a worker whose claim another worker took over). A lost lease fences the run the same way.
        driver: who drives (a worker's id), stored on the lease and on each trial asked for or told.

    Returns how the run ended. Raises :class:`NameTakenError` for a name taken by another spec,
    :class:`LeaseHeldError` for a study another live driver holds, :class:`InvalidSpecError` for a bad spec,
    :class:`FencedError` when the run lost the study to another driver (it then wrote nothing more).
    """
    spec = _validated(spec)
    study, created = create_or_load(storage_url, spec, resume)
    with Lease(study, _lease_ttl(lease_ttl_s), driver=driver) as lease, lease.fenced_writes():
        reason = "its driver stopped while it ran, before any checkpoint (failed when the study resumed)"
        orphans, resumable = fail_orphaned_trials(study, reason)
        if orphans:
            log.warning("study %s: %d trial(s) left RUNNING by a dead driver marked FAIL", spec.name, orphans)
        if resumable:
            log.warning("study %s: %d trial(s) of a dead driver continue from checkpoints", spec.name, len(resumable))
        if created:
            for params in spec.enqueue:
                study.enqueue_trial(params, user_attrs={TrialAttr.ENQUEUED: True}, skip_if_exists=True)
        counts = study_counts(study)
        n_finished = counts.finished
        if n_finished >= spec.budget.n_trials:  # type: ignore[operator]
            return outcome(study, spec, StudyState.SUCCEEDED, None)
        if (
            spec.budget.epochs is not None
            and epochs_spent(study, running=False) + spec.workload.epochs > spec.budget.epochs
        ):
            return outcome(study, spec, StudyState.SUCCEEDED, "the epoch budget is spent")
        n_errors = counts.errors or 0
        if n_errors > spec.budget.max_failed and not resume:
            return outcome(study, spec, StudyState.FAILED, f"{n_errors} trials failed (budget.max_failed)")

        from .runners import RUNNERS, Checkpoints, run_trials, uses_runners
        from .searcher import OptunaStudySearcher

        warm = uses_runners(spec)
        poll, errors = StopPoller(should_cancel), {}
        searcher = OptunaStudySearcher(
            study,
            spec,
            build_distributions(spec),
            n_finished=n_finished,
            n_errors=0 if resume else n_errors,
            should_stop=poll,
            on_change=(lambda: on_progress(dataclasses.replace(study_counts(study), epochs_spent=epochs_spent(study))))
            if on_progress
            else None,
            error_text=errors.get,
            resumable=resumable,
            fenced=lambda: (fenced is not None and fenced()) or not lease.holds(),
            driver=lease.driver,
        )
        stop = lambda: searcher.stop_reason or ("fenced" if searcher.fenced else None) or poll()  # noqa: E731
        if warm:  # no scheduler: the worker's warm runners (see .runners), no Tune run to start
            ensure_ray(ray_address)
            failure = resources_unavailable(spec) or run_trials(
                spec,
                searcher,
                stop_reason=stop,
                storage=storage_location(storage_path, results_dir),
                checkpoints=Checkpoints(
                    keep=CHECKPOINTS_KEPT.get(spec.scheduler.name, 2),
                    interval_s=_checkpoint_interval(checkpoint_interval_s),
                ),
                errors=errors,
            )
        else:
            from ._tune import TrialErrors

            RUNNERS.release()  # Tune's trials need the CPUs idle runners hold
            tune_errors = TrialErrors()
            tune_errors.messages = errors
            failure = fit(
                spec,
                searcher,
                stop_reason=stop,
                callbacks=[tune_errors],
                ray_address=ray_address,
                results_dir=results_dir,
                storage_path=storage_path,
            )
        if searcher.fenced:
            raise FencedError(f"study {spec.name!r}: this driver lost the study to another and stopped its run")
        # trials stopped without a completion callback (a cancel, a run that failed)
        kind = FailKind.CANCELLED if poll.cancelled else FailKind.INFRASTRUCTURE
        searcher.fail_unfinished(kind, failure or "stopped when the tuning run ended")
        if failure is not None:
            return outcome(study, spec, StudyState.FAILED, failure)
        if poll.cancelled:
            return outcome(study, spec, StudyState.CANCELLED, "cancelled")
        if searcher.stop_reason is not None:
            return outcome(study, spec, StudyState.FAILED, searcher.stop_reason)
        return outcome(study, spec, StudyState.SUCCEEDED if searcher.epoch_budget_spent else None, searcher.end_note)


def _validated(spec: StudySpec | dict[str, Any]) -> StudySpec:
    if isinstance(spec, StudySpec):
        return spec
    try:
        return StudySpec.model_validate(spec)
    except ValueError as e:
        raise InvalidSpecError(str(e)) from None
