"""A comparison's life in the database: submit, cancel, resume, and the worker's step that moves it along.

A comparison is ordinary studies linked to one :class:`ComparisonRecord`:

1. **tune** — submitting creates one QUEUED study per arm × batch size (:func:`search_spaces.comparison.expand`,
   role ``tune``); any worker runs them, so several workers share the work.
2. **extend** — once every tuning study SUCCEEDED, :func:`advance` runs the range check (below); with
   ``range_check: extend`` and an optimum on a range's edge at some batch size, every arm × repeat at that batch
   size gets an extension study (role ``extend``) with the same extra budget.
3. **rerun** — once tuning (and extensions) SUCCEEDED, :func:`advance` creates, per arm × batch size × repeat and
   per rank ``1..top_k``, a re-run study (role ``rerun``): the tuned config as single-choice categoricals (so every
   trial trains exactly it and Optuna records every re-run as a trial), ``seed`` = :data:`RERUN_SEED_BASE` with
   ``vary_seed`` (trial ``j`` trains seed ``RERUN_SEED_BASE + j``: :func:`rerun_seeds`, the same in every arm,
   never used while tuning), no scheduler (never pruned), ``max_failed`` 0, and as objective
   ``test_acc_at_best_val`` (nothing is selected on it: it is the number the re-run reports).
4. **done** — once every re-run study SUCCEEDED, :func:`build_result` reads the stored trials (no re-training) into
   a :class:`ComparisonResult`, stored as JSON with the comparison, which is then SUCCEEDED.

Each study record says where it belongs: ``arm``, ``batch_size``, ``role`` (``tune``, ``extend``, ``rerun``),
``repeat`` (the 0-based tuning repeat, ``tuning_repeats`` of them per arm × batch size) and, for a re-run, ``rank``
(which of its repeat's top-k configs). ``epochs_spent`` is kept up to date by the worker as trials end.

**Range check** (after tuning, before the re-runs): the result is stored on every tuning study's record, in
``outcome["range_check"]``: ``{param: {"low", "high", "best", "position", "edge", "extended", "final_low",
"final_high"}}`` for each log-scaled searched parameter (``position`` of the best value in log space, 0..1;
``edge`` "low"/"high" when it lies in the outer 10 %, else None; ``extended`` whether an extension study searched
a moved range; ``final_*`` the range the repeat's winner was finally chosen from). An extension study (role
``extend``, same arm, batch size and repeat) holds the moved ranges in its spec's ``search_space``; the repeat's
winner is the best COMPLETE trial over its tuning and extension studies.

A study that FAILED or was CANCELLED fails the comparison with its name; a resume queues every unfinished study
again and the comparison carries on from its phase.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import asdict
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from search_spaces.comparison import RERUN_SEED_BASE, ComparisonSpec, expand, extension_spec, range_check
from search_spaces.spec import StudySpec

from .. import crud
from ..core.db import session_scope
from ..core.jsondata import jsonable
from ..errors import ConflictError
from ..models import ComparisonRecord, StudyRecord, StudyState, utcnow
from .result import ArmResult, ComparisonResult, ParamRange, RepeatRecord, RerunRecord, TrialRecord
from .stats import at_edge, range_position

__all__ = [
    "RERUN_METRIC",
    "advance",
    "advance_all",
    "build_result",
    "cancel_comparison",
    "create_comparison",
    "list_comparisons",
    "resume_comparison",
    "result_from_json",
    "studies_of",
]

log = logging.getLogger(__name__)

#: What a re-run trial reports as its value: test accuracy at the epoch of best validation accuracy.
RERUN_METRIC = "test_acc_at_best_val"
TUNE, EXTEND, RERUN, DONE = "tune", "extend", "rerun", "done"


# -- the API's side -----------------------------------------------------------------------------------------------


def create_comparison(
    *, session: Session, spec: ComparisonSpec, idempotency_key: str | None = None, owner: str | None = None
) -> tuple[ComparisonRecord, bool]:
    """A new QUEUED comparison and its QUEUED tuning studies, or the existing one for a replayed request."""
    canonical = spec.canonical()
    digest = crud.spec_hash(canonical)
    existing = crud.find_replay(
        session=session, model=ComparisonRecord, name=spec.name, digest=digest, key=idempotency_key
    )
    if existing is not None:
        return existing, False
    record = ComparisonRecord(
        id=uuid.uuid4().hex,
        name=spec.name,
        spec=canonical,
        spec_hash=digest,
        state=StudyState.QUEUED.value,
        phase=TUNE,
        idempotency_key=idempotency_key,
        owner=owner,
    )
    session.add(record)
    session.flush()
    for arm_study in expand(spec):
        spec_ = StudySpec.model_validate(arm_study.spec)
        _add_study(session, record, spec_, arm_study.arm.name, arm_study.batch_size, TUNE, arm_study.repeat)
    return record, True


def _add_study(
    session: Session,
    comparison: ComparisonRecord,
    spec: StudySpec,
    arm: str,
    bs: int,
    role: str,
    repeat: int,
    rank: int | None = None,
) -> StudyRecord:
    study, _ = crud.create_study(session=session, spec=spec, owner=comparison.owner)
    study.comparison_id, study.arm, study.batch_size, study.role = comparison.id, arm, bs, role
    study.repeat, study.rank = repeat, rank
    session.flush()
    return study


def list_comparisons(*, session: Session, limit: int, offset: int) -> tuple[int, list[ComparisonRecord]]:
    """``(total, page)`` of comparisons, newest first."""
    total = session.scalar(sa.select(sa.func.count()).select_from(ComparisonRecord)) or 0
    rows = session.scalars(
        sa.select(ComparisonRecord).order_by(ComparisonRecord.created_at.desc()).limit(limit).offset(offset)
    ).all()
    return total, list(rows)


def studies_of(session: Session, comparison_id: str) -> list[StudyRecord]:
    """The comparison's studies in creation order (tuning studies first, arms outer, batch sizes inner)."""
    return list(
        session.scalars(
            sa.select(StudyRecord)
            .where(StudyRecord.comparison_id == comparison_id)
            .order_by(StudyRecord.created_at, StudyRecord.name)
        ).all()
    )


def cancel_comparison(*, session: Session, comparison_id: str) -> ComparisonRecord:
    """QUEUED or RUNNING → CANCELLED now; its queued studies are cancelled, its running ones asked to stop."""
    record = ComparisonRecord.find_or_raise_by_id(session, comparison_id, for_update=True)
    if StudyState(record.state).is_finished:
        raise ConflictError(f"Comparison is {record.state}; only a QUEUED or RUNNING comparison can be cancelled")
    for study in studies_of(session, record.id):
        if study.state in (StudyState.QUEUED, StudyState.RUNNING):
            crud.cancel_study(session=session, study_id=study.id)
    record.state = StudyState.CANCELLED.value
    record.finished_at = utcnow()
    return record


def resume_comparison(*, session: Session, comparison_id: str) -> ComparisonRecord:
    """A CANCELLED or FAILED comparison carries on: every study that did not succeed is queued again."""
    record = ComparisonRecord.find_or_raise_by_id(session, comparison_id, for_update=True)
    if record.state not in (StudyState.CANCELLED, StudyState.FAILED):
        raise ConflictError(f"Comparison is {record.state}; only a CANCELLED or FAILED one can be resumed")
    for study in studies_of(session, record.id):
        if study.state in (StudyState.CANCELLED, StudyState.FAILED):
            crud.resume_study(session=session, study_id=study.id)
        elif study.state == StudyState.RUNNING:
            study.cancel_requested = False  # a cancel its worker has not acted on yet: let it run on
    record.state = StudyState.RUNNING.value if record.phase != TUNE else StudyState.QUEUED.value
    record.error = None
    record.finished_at = None
    return record


# -- the worker's side --------------------------------------------------------------------------------------------


def advance_all(url: str) -> int:
    """Move every live comparison one step if it can; returns how many changed. Called by workers between studies."""
    with session_scope(url) as s:
        ids = list(
            s.scalars(
                sa.select(ComparisonRecord.id).where(
                    ComparisonRecord.state.in_((StudyState.QUEUED.value, StudyState.RUNNING.value))
                )
            )
        )
    changed = 0
    for comparison_id in ids:
        with session_scope(url) as s:
            changed += advance(session=s, comparison_id=comparison_id, storage_url=url)
    return changed


def advance(*, session: Session, comparison_id: str, storage_url: str) -> bool:
    """One step of a comparison (under its row lock, so two workers never both step it). Returns whether it moved."""
    record = session.scalars(
        sa.select(ComparisonRecord).where(ComparisonRecord.id == comparison_id).with_for_update(skip_locked=True)
    ).one_or_none()
    if record is None or StudyState(record.state).is_finished:
        return False
    studies = studies_of(session, record.id)
    current = [s for s in studies if s.role == record.phase]
    moved = False
    if record.state == StudyState.QUEUED and any(s.state != StudyState.QUEUED for s in studies):
        record.state, moved = StudyState.RUNNING.value, True
    broken = [s for s in current if s.state in (StudyState.FAILED, StudyState.CANCELLED)]
    if broken:
        record.state = StudyState.FAILED.value
        record.error = "; ".join(f"study {s.name} {s.state}" + (f": {s.error}" if s.error else "") for s in broken)
        record.finished_at = utcnow()
        for study in studies:  # the rest cannot make the comparison whole: stop them (a resume queues them again)
            if study.state in (StudyState.QUEUED, StudyState.RUNNING):
                crud.cancel_study(session=session, study_id=study.id)
        return True
    if not current or any(s.state != StudyState.SUCCEEDED for s in current):
        return moved
    spec = ComparisonSpec.model_validate(record.spec)
    if record.phase == TUNE:
        record.state = StudyState.RUNNING.value
        if _check_ranges(session, record, spec, current, storage_url):
            record.phase = EXTEND
            log.info("comparison %s: tuning done, range-check extensions queued", record.name)
            return True
    if record.phase in (TUNE, EXTEND):
        tuning = [s for s in studies if s.role in (TUNE, EXTEND)]
        for study in (s for s in studies if s.role == TUNE):
            mine = [s for s in tuning if (s.arm, s.batch_size, s.repeat) == (study.arm, study.batch_size, study.repeat)]
            for rank, params in enumerate(_top_configs(storage_url, mine, spec.rerun.top_k), start=1):
                rerun = rerun_spec(StudySpec.model_validate(study.spec), params, rank, spec.rerun.seeds)
                _add_study(
                    session, record, rerun, study.arm or "", study.batch_size or 0, RERUN, study.repeat or 0, rank
                )
        record.phase = RERUN
        log.info("comparison %s: tuning done, re-runs queued", record.name)
        return True
    try:
        result = build_result(storage_url, spec, studies)
    except Exception as e:  # the comparison fails with the reason; the worker lives on
        log.exception("comparison %s: building the result failed", record.name)
        record.state, record.error = StudyState.FAILED.value, f"building the result: {type(e).__name__}: {e}"
    else:
        record.result = jsonable(asdict(result))
        record.state, record.phase = StudyState.SUCCEEDED.value, DONE
    record.finished_at = utcnow()
    log.info("comparison %s: %s", record.name, record.state)
    return True


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


def _top_configs(storage_url: str, studies: list[StudyRecord], k: int) -> list[dict[str, Any]]:
    """The ``k`` best COMPLETE trials' params over ``studies`` (a tuning study and its extension) by the objective
    (among equals the earlier study, then the earlier trial)."""
    sign = -1.0 if StudySpec.model_validate(studies[0].spec).directions[0] == "maximize" else 1.0
    ranked = sorted(
        (sign * t.value, i, t.number, dict(t.params))
        for i, study in enumerate(studies)
        for t in _load(storage_url, study.name).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    )
    if not ranked:
        raise ConflictError(f"study {studies[0].name} has no COMPLETE trial to re-run")
    return [params for *_, params in ranked[:k]]


def _check_ranges(
    session: Session, record: ComparisonRecord, spec: ComparisonSpec, tuning: list[StudyRecord], storage_url: str
) -> bool:
    """The range check (module docstring), recorded on each tuning study's ``outcome["range_check"]``; with
    ``range_check: extend``, one extension study per tuning study at every batch size where any arm's optimum lies
    on an edge. Returns whether it queued extensions."""
    checks = {}
    for study in tuning:
        (best,) = _top_configs(storage_url, [study], 1)
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
            _add_study(session, record, ext, study.arm or "", study.batch_size or 0, EXTEND, study.repeat or 0)
        checked = {
            k: {**c, "extended": k in edges, "final_low": final[k]["low"], "final_high": final[k]["high"]}
            for k, c in checks[study.id].items()
        }
        study.outcome = {**(study.outcome or {}), "range_check": checked}
    if on_edge:
        log.info("comparison %s: optima on a range's edge at batch sizes %s", record.name, sorted(on_edge))
    return bool(extend)


def _load(storage_url: str, name: str) -> optuna.Study:
    from .._optuna import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage_url))


# -- the result ---------------------------------------------------------------------------------------------------


def _rows(curves: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """A trial's column-wise curves (user attr ``curves``) as one row per epoch."""
    if not curves or not curves.get("epoch"):
        return []
    keys = list(curves)
    return [{k: curves[k][i] for k in keys if i < len(curves[k])} for i in range(len(curves["epoch"]))]


def _trial_record(t: optuna.trial.FrozenTrial, repeat: int = 0) -> TrialRecord:
    from ..engine.searcher import trial_epochs

    # a PRUNED trial is valued at its last intermediate value (as Optuna records it); a FAIL has none
    last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
    value = t.value if t.state == TrialState.COMPLETE else last
    if t.state == TrialState.FAIL or (value is not None and not math.isfinite(value)):
        value = None
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        params=dict(t.params),
        value=value,
        epochs=trial_epochs(t),
        wall_seconds=t.user_attrs.get("wall_seconds"),
        curve=_rows(t.user_attrs.get("curves")),
        repeat=repeat,
    )


def _importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA), or none when fewer than 2 trials completed or one param is fixed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not complete[0].params:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as e:  # e.g. every completed trial has the same value
        log.info("importances of %s: %s", study.study_name, e)
        return {}


#: The roles whose studies tune an arm (a tuning study and its range-check extension): their trials and spending.
_TUNING_ROLES = (TUNE, EXTEND)


def build_result(storage_url: str, spec: ComparisonSpec, studies: list[StudyRecord]) -> ComparisonResult:
    """The comparison's result from what is stored: per arm × batch size and tuning repeat, the tuning and extension
    studies' trials, their stored ``epochs_spent``, the winner and where it sits in its searched ranges (the range
    check's ``outcome["range_check"]`` says which were extended), and the re-runs of each repeat's winner.

    Nothing is recounted or re-trained. A study that did not succeed, or that holds no trials, is listed in the arm's
    ``problems`` (its verdicts are then inconclusive) instead of failing the whole result.
    """
    sign = -1.0 if spec.objective.direction == "maximize" else 1.0
    arms = []
    for arm in spec.arms:
        for bs in spec.batch_sizes:
            mine = [s for s in studies if s.arm == arm.name and s.batch_size == bs]
            problems = [f"study {s.name} {s.state}" for s in mine if s.state != StudyState.SUCCEEDED]
            trials: list[TrialRecord] = []
            reruns: list[RerunRecord] = []
            repeats: list[RepeatRecord] = []
            importances: list[dict[str, float]] = []
            for repeat in range(spec.tuning_repeats):
                tuning = [s for s in mine if s.role in _TUNING_ROLES and (s.repeat or 0) == repeat]
                if not any(s.role == TUNE for s in tuning):
                    problems.append(f"no tuning study for repeat {repeat}")
                    continue
                found: list[TrialRecord] = []
                for study in tuning:
                    stored = _load_or_none(storage_url, study.name)
                    if stored is None:
                        problems.append(f"study {study.name} has no trials stored")
                        continue
                    found += [
                        _trial_record(t, repeat) for t in stored.get_trials(deepcopy=False) if t.state.is_finished()
                    ]
                    if study.role == TUNE:
                        importances.append(_importances(stored))
                trials += found
                repeats.append(_repeat_record(repeat, tuning, found, sign))
                for study in (s for s in mine if s.role == RERUN and (s.repeat or 0) == repeat):
                    stored = _load_or_none(storage_url, study.name)
                    for t in stored.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if stored else []:
                        curve = _rows(t.user_attrs.get("curves"))
                        reruns.append(
                            RerunRecord(RERUN_SEED_BASE + t.number, float(t.value), curve, study.rank or 1, repeat)
                        )
            # the trainer's cumulative step count after the first epoch is the steps per epoch
            firsts = [run.curve[0] for run in reruns if run.curve and run.curve[0].get("step")]
            steps = int(firsts[0]["step"]) if firsts else 0
            tune = next((s for s in mine if s.role == TUNE), None)
            best = min(
                (r for r in repeats if r.best_value is not None), key=lambda r: sign * r.best_value, default=None
            )  # type: ignore[operator]
            arms.append(
                ArmResult(
                    label=arm.name,
                    optimizer=arm.optimizer,
                    batch_size=bs,
                    studies=[s.id for s in mine],
                    best_params=dict(best.best_params) if best else {},
                    fixed=dict(StudySpec.model_validate(tune.spec).fixed) if tune else {},
                    epochs=spec.workload.epochs,
                    steps_per_epoch=steps or 1,
                    trials=trials,
                    reruns=reruns,
                    importances=_mean_importances(importances),
                    repeats=repeats,
                    epochs_spent=sum(r.epochs_spent for r in repeats),
                    problems=problems,
                )
            )
    return ComparisonResult(
        name=spec.name,
        workload=spec.workload.model_dump(mode="json"),
        objective=spec.objective.metric,
        arms=arms,
        target_val_acc=spec.target_val_acc,
        rerun_metric=RERUN_METRIC,
        curve_metric="val_acc",
        tuning_repeats=spec.tuning_repeats,
        range_check=spec.range_check,
    )


def _load_or_none(storage_url: str, name: str) -> optuna.Study | None:
    try:
        return _load(storage_url, name)
    except KeyError:  # a study the worker never started has no Optuna study yet
        return None


def _repeat_record(repeat: int, tuning: list[StudyRecord], trials: list[TrialRecord], sign: float) -> RepeatRecord:
    """One repeat: its stored spending, its winner (best COMPLETE trial over its studies) and its ranges.

    A range is the tuning study's searched one, or the range check's final one (``outcome["range_check"]``) where it
    was extended; the winner's position in it is computed here, in log space for a log range.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE.name and t.value is not None]
    # the best value; among equals the earlier study, then the earlier trial (``trials`` is in that order), as the
    # re-runs' _top_configs picks it
    order = min(range(len(complete)), key=lambda i: (sign * complete[i].value, i), default=None)  # type: ignore[operator]
    winner = None if order is None else complete[order]
    tune = next(s for s in tuning if s.role == TUNE)
    checked = (tune.outcome or {}).get("range_check") or {}
    ranges = {}
    for name, p in StudySpec.model_validate(tune.spec).search_space.items():
        if p.type == "categorical":
            continue
        record = checked.get(name) or {}
        low, high = float(record.get("final_low", p.low)), float(record.get("final_high", p.high))
        value = winner.params.get(name) if winner else None
        position = None if value is None else range_position(float(value), low, high, bool(p.log))
        ranges[name] = ParamRange(
            low,
            high,
            bool(p.log),
            value,
            position,
            bool(p.log) and position is not None and at_edge(position),  # the range check's rule: log ranges only
            bool(record.get("extended")),
        )
    return RepeatRecord(
        repeat=repeat,
        studies=[s.id for s in tuning],
        epochs_spent=sum(s.epochs_spent or 0 for s in tuning),
        best_value=winner.value if winner else None,
        best_params=dict(winner.params) if winner else {},
        ranges=ranges,
    )


def _mean_importances(per_study: list[dict[str, float]]) -> dict[str, float]:
    """Each parameter's importance averaged over the repeats that have importances."""
    have = [d for d in per_study if d]
    keys = sorted({k for d in have for k in d})
    return {k: sum(d.get(k, 0.0) for d in have) / len(have) for k in keys}


def result_from_json(data: dict[str, Any]) -> ComparisonResult:
    """A stored result back as dataclasses (what the report and the verdicts are computed from).

    A result stored before tuning repeats has no ``repeats`` and no stored ``epochs_spent``: its arms' spending is
    then the sum of their trials' epochs, as it was computed then.
    """
    arms = []
    for a in data["arms"]:
        a = dict(a)
        a["trials"] = [TrialRecord(**t) for t in a["trials"]]
        a["reruns"] = [RerunRecord(**r) for r in a["reruns"]]
        a["repeats"] = [
            RepeatRecord(**{**r, "ranges": {k: ParamRange(**v) for k, v in r.get("ranges", {}).items()}})
            for r in a.get("repeats", [])
        ]
        if "epochs_spent" not in a:
            a["epochs_spent"] = sum(t.epochs for t in a["trials"])
        arms.append(ArmResult(**a))
    return ComparisonResult(**{**data, "arms": arms})
