"""Planning after tuning: the range check (and its extension studies), then the re-runs of each repeat's winners.

**Range check** (after tuning, and again after each round of extensions, before the re-runs:
:func:`check_ranges`): the result is stored on every tuning study's record, in ``outcome["range_check"]`` (see
:func:`check_ranges`) for each numeric searched parameter, log or linear. An extension study (role ``extend``, same
arm, batch size and repeat, name ``<tuning study>-x<e>``) holds the widened ranges in its spec's ``search_space``
and spends what a tuning study does; the repeat's winner is the best COMPLETE trial over its tuning and extension
studies.

**Re-runs**: per arm × batch size × repeat and per rank ``1..top_k``, a re-run study (role ``rerun``, its rank in
the study record's ``rank`` column): the tuned config as single-choice categoricals (so every trial trains exactly
it and Optuna records every re-run as a trial), ``seed`` = ``RERUN_SEED_BASE + r · S`` with ``vary_seed`` (trial
``j`` of repeat ``r`` trains seed ``RERUN_SEED_BASE + r · S + j``: :func:`search_spaces.comparison.rerun_seeds`,
nested in the repeat, the same in every arm, never used while tuning; each trial stores it as ``TrialAttr.SEED``),
no scheduler (never pruned), ``max_failed`` 0, and as objective ``test_acc_at_best_val`` (nothing is selected on
it: it is the number the re-run reports).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy.orm import Session

from search_spaces.comparison import ComparisonSpec, extension_spec, range_check, rerun_seed_base
from search_spaces.spec import StudySpec
from tvlars.train.metrics import Metric

from ..errors import ConflictError
from ..models import ComparisonPhase, ComparisonRecord, StudyRecord
from ..optuna_queries import load_study, ranked_trials
from .records import TUNING_ROLES, add_study

__all__ = ["RERUN_METRIC", "check_ranges", "extension_index", "queue_reruns", "rerun_spec", "top_configs"]

log = logging.getLogger(__name__)

#: What a re-run trial reports as its value: test accuracy at the epoch of best validation accuracy.
RERUN_METRIC = Metric.TEST_ACC_AT_BEST_VAL.value


def rerun_spec(tuned: StudySpec, params: dict[str, Any], rank: int, seeds: int, repeat: int = 0) -> StudySpec:
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
        seed=rerun_seed_base(repeat),
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
            rerun = rerun_spec(StudySpec.model_validate(study.spec), params, rank, spec.rerun.seeds, study.repeat or 0)
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


def extension_index(study: StudyRecord) -> int:
    """0 for a tuning study, ``e`` for its range-check extension ``e`` (name ``...-x<e>``; a bare ``-x``, from
    before several extensions, is 1)."""
    if study.role != ComparisonPhase.EXTEND:
        return 0
    match = re.search(r"-x(\d*)$", study.name)
    return int(match.group(1) or 1) if match else 1


def check_ranges(
    session: Session, record: ComparisonRecord, spec: ComparisonSpec, tuning: list[StudyRecord], storage_url: str
) -> bool:
    """One round of the range check over ``tuning`` (every tuning and extension study so far, all SUCCEEDED).

    Per arm × batch size × repeat, the winner over its studies so far is placed in the range last searched (each
    extension widens the one before, so it holds every earlier range: the range the winner was found in, or a wider
    one searched as hard). With ``range_check.mode: extend``, at a batch size where some arm × repeat's winner lies
    on an edge that can widen (:func:`search_spaces.comparison.widened`) and fewer than
    ``range_check.max_extensions`` extensions ran, every arm × repeat there gets the next extension
    (:func:`search_spaces.comparison.extension_spec`: a tuning study's trials and epochs). Recorded on each tuning
    study's ``outcome["range_check"]``: ``{param: {"low", "high", "log", "best", "position", "edge", "extendable",
    "extended", "extensions", "final_low", "final_high", "edge_final"}}`` (``final_*``: the range the winner is
    chosen from once queued extensions ran; ``edge_final``: still on an edge with no extension left to run).
    Returns whether it queued extensions.
    """
    groups: dict[tuple[str, int, int], list[StudyRecord]] = {}
    for study in tuning:
        groups.setdefault((study.arm or "", study.batch_size or 0, study.repeat or 0), []).append(study)
    checks, last, done = {}, {}, {}
    for key, mine in groups.items():
        mine.sort(key=extension_index)
        last[key], done[key] = mine[-1], extension_index(mine[-1])
        (best,) = top_configs(storage_url, mine, 1)
        checks[key] = range_check(last[key].spec["search_space"], best)
    mode, most = spec.range_check.mode, spec.range_check.max_extensions
    on_edge = {k[1] for k, c in checks.items() if any(x["edge"] for x in c.values())}
    extend = {
        k[1]
        for k, c in checks.items()
        if mode == "extend" and done[k] < most and any(x["extendable"] for x in c.values())
    }
    for key, mine in groups.items():
        tune = next(s for s in mine if s.role == ComparisonPhase.TUNE)
        final = last[key].spec["search_space"]
        queued = key[1] in extend
        if queued:
            edges = {k: c["edge"] for k, c in checks[key].items() if c["extendable"]}
            data = extension_spec(tune.spec, edges, done[key] + 1, final)
            final = data["search_space"]
            add_study(
                session,
                record,
                StudySpec.model_validate(data),
                tune.arm or "",
                tune.batch_size or 0,
                ComparisonPhase.EXTEND,
                tune.repeat or 0,
            )
        extensions = done[key] + int(queued)
        tune.outcome = {
            **(tune.outcome or {}),
            "range_check": {
                k: {
                    **c,
                    "extended": final[k] != tune.spec["search_space"][k],
                    "extensions": extensions,
                    "final_low": final[k]["low"],
                    "final_high": final[k]["high"],
                    "edge_final": bool(c["edge"]) and not queued,
                }
                for k, c in checks[key].items()
            },
        }
    if on_edge:
        log.info(
            "comparison %s: optima on a range's edge at batch sizes %s; extending at %s",
            record.name,
            sorted(on_edge),
            sorted(extend),
        )
    return bool(extend)
