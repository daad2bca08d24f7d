"""Planning after tuning: the range check (and its extension studies), then the re-runs of each repeat's winners.

**Range check** (after tuning, before the re-runs): the result is stored on every tuning study's record, in
``outcome["range_check"]``: ``{param: {"low", "high", "best", "position", "edge", "extended", "final_low",
"final_high"}}`` for each log-scaled searched parameter (``position`` of the best value in log space, 0..1;
``edge`` "low"/"high" when it lies in the outer 10 %, else None; ``extended`` whether an extension study searched
a moved range; ``final_*`` the range the repeat's winner was finally chosen from). An extension study (role
``extend``, same arm, batch size and repeat) holds the moved ranges in its spec's ``search_space``; the repeat's
winner is the best COMPLETE trial over its tuning and extension studies.

**Re-runs**: per arm × batch size × repeat and per rank ``1..top_k``, a re-run study (role ``rerun``, its rank in
the study record's ``rank`` column): the tuned config as single-choice categoricals (so every trial trains exactly
it and Optuna records every re-run as a trial), ``seed`` = :data:`RERUN_SEED_BASE` with ``vary_seed`` (trial ``j``
trains seed ``RERUN_SEED_BASE + j``: :func:`search_spaces.comparison.rerun_seeds`, the same in every arm, never
used while tuning), no scheduler (never pruned), ``max_failed`` 0, and as objective ``test_acc_at_best_val``
(nothing is selected on it: it is the number the re-run reports).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from search_spaces.comparison import RERUN_SEED_BASE, ComparisonSpec, extension_spec, range_check
from search_spaces.spec import StudySpec

from ..errors import ConflictError
from ..models import ComparisonPhase, ComparisonRecord, StudyRecord
from ..optuna_queries import load_study, ranked_trials
from ..trial_report import TrialAttr
from .records import TUNING_ROLES, add_study

__all__ = ["RERUN_METRIC", "check_ranges", "queue_reruns", "rerun_spec", "top_configs"]

log = logging.getLogger(__name__)

#: What a re-run trial reports as its value: test accuracy at the epoch of best validation accuracy.
RERUN_METRIC = TrialAttr.TEST_ACC_AT_BEST_VAL.value


def rerun_spec(tuned: StudySpec, params: dict[str, Any], rank: int, seeds: int) -> StudySpec:
    """The study that re-trains one tuned config on the fresh seeds: see the module docstring."""
    data = tuned.canonical()
    data.update(
        name=f"{tuned.name}-r{rank}",
        description=f"Re-runs of rank {rank} of {tuned.name} on {seeds} fresh seeds.",
        search_space={k: {"type": "categorical", "choices": [v]} for k, v in params.items()},
        objective={"metric": RERUN_METRIC, "direction": "maximize"},
        sampler={"name": "random", "seed": 0, "options": {}},
        scheduler={"name": "none"},
        budget={"n_trials": seeds, "max_concurrent": tuned.budget.max_concurrent, "max_failed": 0},
        enqueue=[],
        seed=RERUN_SEED_BASE,
        vary_seed=True,
    )
    return StudySpec.model_validate(data)


def top_configs(storage_url: str, studies: list[StudyRecord], k: int) -> list[dict[str, Any]]:
    """The ``k`` best COMPLETE trials' params over ``studies`` (a tuning study and its extension) by the objective
    (among equals the earlier study, then the earlier trial)."""
    direction = StudySpec.model_validate(studies[0].spec).directions[0]
    ranked = ranked_trials([load_study(storage_url, s.name) for s in studies], direction)
    if not ranked:
        raise ConflictError(f"study {studies[0].name} has no COMPLETE trial to re-run")
    return [dict(t.params) for t in ranked[:k]]


def queue_reruns(
    session: Session, record: ComparisonRecord, spec: ComparisonSpec, studies: list[StudyRecord], storage_url: str
) -> None:
    """One re-run study per tuning study's arm × batch size × repeat and rank ``1..top_k`` (module docstring)."""
    tuning = [s for s in studies if s.role in TUNING_ROLES]
    for study in (s for s in studies if s.role == ComparisonPhase.TUNE):
        mine = [s for s in tuning if (s.arm, s.batch_size, s.repeat) == (study.arm, study.batch_size, study.repeat)]
        for rank, params in enumerate(top_configs(storage_url, mine, spec.rerun.top_k), start=1):
            rerun = rerun_spec(StudySpec.model_validate(study.spec), params, rank, spec.rerun.seeds)
            add_study(
                session,
                record,
                rerun,
                study.arm or "",
                study.batch_size or 0,
                ComparisonPhase.RERUN,
                study.repeat or 0,
                rank,
            )


def check_ranges(
    session: Session, record: ComparisonRecord, spec: ComparisonSpec, tuning: list[StudyRecord], storage_url: str
) -> bool:
    """The range check (module docstring), recorded on each tuning study's ``outcome["range_check"]``; with
    ``range_check: extend``, one extension study per tuning study at every batch size where any arm's optimum lies
    on an edge. Returns whether it queued extensions."""
    checks = {}
    for study in tuning:
        (best,) = top_configs(storage_url, [study], 1)
        checks[study.id] = range_check(study.spec["search_space"], best)
    on_edge = {s.batch_size for s in tuning if any(c["edge"] for c in checks[s.id].values())}
    extend = on_edge if spec.range_check == "extend" else set()
    for study in tuning:
        edges = {k: c["edge"] for k, c in checks[study.id].items() if c["edge"]} if study.batch_size in extend else {}
        final = study.spec["search_space"]
        if study.batch_size in extend:
            data = extension_spec(study.spec, edges, spec.extension_budget)
            final = data["search_space"]
            ext = StudySpec.model_validate(data)
            add_study(
                session, record, ext, study.arm or "", study.batch_size or 0, ComparisonPhase.EXTEND, study.repeat or 0
            )
        checked = {
            k: {**c, "extended": k in edges, "final_low": final[k]["low"], "final_high": final[k]["high"]}
            for k, c in checks[study.id].items()
        }
        study.outcome = {**(study.outcome or {}), "range_check": checked}
    if on_edge:
        log.info("comparison %s: optima on a range's edge at batch sizes %s", record.name, sorted(on_edge))
    return bool(extend)
