"""Every read of what Optuna stores, for the API, the engine and comparisons alike (writes go through the engine's
searcher and :mod:`service._optuna`).

Two kinds of read:

- **SQL over Optuna's tables** (the API's): counts, leaderboards and trial pages without loading every trial into
  Python. Optuna's schema (studies, trials, trial_values, trial_params, trial_intermediate_values,
  trial_user_attributes) is declared here as lightweight table clauses with just the columns we read.
- **Loaded studies** (the engine's and comparisons'): :func:`load_study` by name, the trials in some states
  (:func:`stored_trials`), what they spent (:func:`trial_epochs`, :func:`epochs_spent`), their counts
  (:func:`study_counts`), the best ones over several studies (:func:`ranked_trials`) and parameter importances.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from tvlars.train.metrics import Metric

from ._optuna import open_storage
from .errors import NotFoundError
from .trial_report import BOARD_ATTRS, SUMMARY_ATTRS, FailKind, TrialAttr

__all__ = [
    "ENDED",
    "TRIAL_STATES",
    "StudyCounts",
    "best_trial",
    "epochs_spent",
    "finished_count",
    "leaderboard",
    "load_study",
    "load_study_or_none",
    "param_importances",
    "ranked_trials",
    "stored_trials",
    "study_counts",
    "trial_counts",
    "trial_epochs",
    "trial_timings",
    "trials_page",
]

log = logging.getLogger(__name__)

studies = sa.table("studies", sa.column("study_id"), sa.column("study_name"))
directions = sa.table("study_directions", sa.column("study_id"), sa.column("direction"), sa.column("objective"))
trials = sa.table(
    "trials",
    sa.column("trial_id"),
    sa.column("number"),
    sa.column("study_id"),
    sa.column("state"),
    sa.column("datetime_start", sa.DateTime),  # typed: SQLite hands back text otherwise
    sa.column("datetime_complete", sa.DateTime),
)
values = sa.table("trial_values", sa.column("trial_id"), sa.column("objective"), sa.column("value", sa.Float))
params = sa.table(
    "trial_params",
    sa.column("trial_id"),
    sa.column("param_name"),
    sa.column("param_value"),
    sa.column("distribution_json"),
)
intermediate = sa.table(
    "trial_intermediate_values",
    sa.column("trial_id"),
    sa.column("step", sa.Integer),
    sa.column("intermediate_value", sa.Float),
)
user_attrs = sa.table("trial_user_attributes", sa.column("trial_id"), sa.column("key"), sa.column("value_json"))

#: Trial states by name: Optuna's own ``TrialState`` (stored by name in its ``trials`` table).
TRIAL_STATES = tuple(s.name for s in TrialState)


@dataclass(frozen=True)
class StudyCounts:
    """A study's trials by state (one field per Optuna ``TrialState``, lower case), and what its budget reads.

    ``errors``: the FAIL trials whose kind counts against ``budget.max_failed`` (:func:`study_counts` reads each
    trial's kind; None where nothing read it). ``epochs_spent``: :func:`epochs_spent`, where the engine's progress
    report adds it.
    """

    running: int = 0
    waiting: int = 0
    complete: int = 0
    pruned: int = 0
    fail: int = 0
    errors: int | None = None
    epochs_spent: int | None = None

    @property
    def finished(self) -> int:
        """COMPLETE + PRUNED: what ``budget.n_trials`` counts."""
        return self.complete + self.pruned

    @classmethod
    def of_states(cls, by_state: Mapping[str, int], **more: int) -> StudyCounts:
        """From counts keyed by ``TrialState`` name (states not given are 0)."""
        return cls(**{name.lower(): n for name, n in by_state.items()}, **more)


def _state_in(states: tuple[str, ...]):
    """``state IN ('A', 'B')`` with inline literals: PostgreSQL stores Optuna's states as an enum, and an untyped
    literal compares as that enum (and uses its index order), where a VARCHAR parameter or a cast would not."""
    unknown = [s for s in states if s not in TRIAL_STATES]
    if unknown:  # only known names are ever inlined into SQL
        raise ValueError(f"unknown trial state(s): {unknown}")
    return trials.c.state.in_([sa.literal_column(f"'{s}'") for s in states])


#: (database, study name) → (study id, first direction). A study's id and directions never change once created.
_STUDIES: dict[tuple[str, str], tuple[int, str]] = {}


def _study(session: Session, name: str) -> tuple[int, str] | None:
    """The Optuna study's id and first objective's direction, or None while it does not exist yet."""
    key = (str(session.get_bind().url), name)
    if key not in _STUDIES:
        row = session.execute(
            sa.select(studies.c.study_id, directions.c.direction)
            .select_from(
                studies.outerjoin(
                    directions, sa.and_(directions.c.study_id == studies.c.study_id, directions.c.objective == 0)
                )
            )
            .where(studies.c.study_name == name)
        ).first()
        if row is None:
            return None
        _STUDIES[key] = (row.study_id, str(getattr(row.direction, "name", row.direction) or "MAXIMIZE"))
    return _STUDIES[key]


def _aware(value: datetime | None) -> datetime | None:
    """Optuna stores naive local times; give them their zone (RFC 3339 needs one)."""
    return value.astimezone(UTC) if value is not None else None


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def trial_counts(session: Session, names: list[str]) -> dict[str, StudyCounts]:
    """Trials by state for each study name (one grouped query for all of them; ``errors`` is not read)."""
    out = {name: dict.fromkeys(TRIAL_STATES, 0) for name in names}
    if not names:
        return {}
    rows = session.execute(
        sa.select(studies.c.study_name, trials.c.state, sa.func.count())
        .select_from(trials.join(studies, studies.c.study_id == trials.c.study_id))
        .where(studies.c.study_name.in_(names))
        .group_by(studies.c.study_name, trials.c.state)
    )
    for name, state, n in rows:
        out[name][str(state.name if hasattr(state, "name") else state)] = n
    return {name: StudyCounts.of_states(by_state) for name, by_state in out.items()}


def _params_of(session: Session, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    if not trial_ids:
        return out
    for trial_id, name, value, dist in session.execute(
        sa.select(params.c.trial_id, params.c.param_name, params.c.param_value, params.c.distribution_json).where(
            params.c.trial_id.in_(trial_ids)
        )
    ):
        out[trial_id][name] = json_to_distribution(dist).to_external_repr(value)
    return out


def _attrs_of(session: Session, trial_ids: list[int], keys: tuple[str, ...] | None) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    if not trial_ids:
        return out
    query = sa.select(user_attrs.c.trial_id, user_attrs.c.key, user_attrs.c.value_json).where(
        user_attrs.c.trial_id.in_(trial_ids)
    )
    if keys is not None:
        query = query.where(user_attrs.c.key.in_(keys))
    for trial_id, key, value in session.execute(query):
        out[trial_id][key] = json.loads(value)
    return out


def _epochs_reached():
    return (
        sa.select(sa.func.max(intermediate.c.step))
        .where(intermediate.c.trial_id == trials.c.trial_id)
        .scalar_subquery()
        .label("epochs")
    )


def trial_timings(session: Session, names: list[str]) -> list[dict[str, Any]]:
    """Per ended trial (COMPLETE or PRUNED) of the studies ``names``: ``{"study", "seconds", "epochs",
    "steps_per_epoch"}`` from its stored user attrs (``steps_per_epoch``: the trainer's step count after its first
    epoch, from its curves; None where unknown). Trials without a wall time or epochs are left out."""
    if not names:
        return []
    rows = session.execute(
        sa.select(trials.c.trial_id, studies.c.study_name)
        .select_from(trials.join(studies, studies.c.study_id == trials.c.study_id))
        .where(studies.c.study_name.in_(names), _state_in(("COMPLETE", "PRUNED")))
    ).all()
    ids = [r.trial_id for r in rows]
    attrs = _attrs_of(session, ids, (TrialAttr.WALL_SECONDS.value, TrialAttr.EPOCHS_RUN.value))
    curves = _attrs_of(session, ids[:1], (TrialAttr.CURVES.value,))  # one trial's curves: the bulk of its data
    out = []
    for row in rows:
        a = attrs.get(row.trial_id, {})
        wall, epochs = a.get(TrialAttr.WALL_SECONDS.value), a.get(TrialAttr.EPOCHS_RUN.value)
        if wall is None or not epochs:
            continue
        steps = (curves.get(row.trial_id, {}).get(TrialAttr.CURVES.value) or {}).get(Metric.STEP) or [None]
        out.append(
            {
                "study": row.study_name,
                "seconds": float(wall),
                "epochs": int(epochs),
                "steps_per_epoch": None if steps[0] is None else int(steps[0]),
            }
        )
    return out


#: Leaderboards computed lately, keyed by the study and its number of finished trials (see :func:`leaderboard`).
_LEADERBOARDS: OrderedDict[tuple, list[dict[str, Any]]] = OrderedDict()
_LEADERBOARDS_LOCK = threading.Lock()
LEADERBOARD_CACHE_SIZE = 256


def finished_count(session: Session, study_id: int) -> int:
    """The study's COMPLETE and PRUNED trials: a leaderboard changes only when this number does."""
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(trials)
            .where(trials.c.study_id == study_id, _state_in(("COMPLETE", "PRUNED")))
        )
        or 0
    )


def leaderboard(
    session: Session, name: str, limit: int, include_pruned: bool = False, n_finished: int | None = None
) -> list[dict[str, Any]] | None:
    """The best ``limit`` trials by the first objective, ordered and limited in SQL. None if no such study.

    With ``include_pruned``, PRUNED trials follow the COMPLETE ones: a pruned trial's value is from an earlier epoch
    (``epochs`` says which), so it is listed, never ranked above a trial that ran its full budget.

    A finished trial never changes, and a leaderboard lists finished trials only, so one computed at the same number
    of finished trials is still right: it is served from memory (``n_finished``: that number, when the caller
    has counted it already).
    """
    found = _study(session, name)
    if found is None:
        return None
    study_id = found[0]
    if n_finished is None:
        n_finished = finished_count(session, study_id)
    key = (str(session.get_bind().url), study_id, n_finished, limit, include_pruned)
    with _LEADERBOARDS_LOCK:
        hit = _LEADERBOARDS.get(key)
        if hit is not None:
            _LEADERBOARDS.move_to_end(key)
            return list(hit)
    board = _leaderboard(session, found, limit, include_pruned)
    with _LEADERBOARDS_LOCK:
        _LEADERBOARDS[key] = board
        while len(_LEADERBOARDS) > LEADERBOARD_CACHE_SIZE:
            _LEADERBOARDS.popitem(last=False)
    return list(board)


def _leaderboard(session: Session, found: tuple[int, str], limit: int, include_pruned: bool) -> list[dict[str, Any]]:
    study_id, direction = found
    states = ("COMPLETE", "PRUNED") if include_pruned else ("COMPLETE",)
    order = values.c.value.desc() if direction == "MAXIMIZE" else values.c.value.asc()
    rows = session.execute(
        sa.select(trials.c.trial_id, trials.c.number, trials.c.state, values.c.value, _epochs_reached())
        .select_from(trials.join(values, sa.and_(values.c.trial_id == trials.c.trial_id, values.c.objective == 0)))
        .where(trials.c.study_id == study_id, _state_in(states))
        .order_by(sa.case((_state_in(("COMPLETE",)), 0), else_=1), order, trials.c.number)
        .limit(limit)
    ).all()
    ids = [r.trial_id for r in rows]
    p = _params_of(session, ids)
    attrs = _attrs_of(session, ids, BOARD_ATTRS)
    return [
        {
            "rank": i + 1,
            "number": r.number,
            "state": str(getattr(r.state, "name", r.state)),
            "value": _finite(r.value),
            "params": p[r.trial_id],
            "epochs": r.epochs,
            **{k: attrs[r.trial_id].get(k) for k in BOARD_ATTRS},
        }
        for i, r in enumerate(rows)
    ]


def trials_page(
    session: Session, name: str, limit: int, offset: int, state: str | None = None, curves: bool = False
) -> tuple[int, list[dict[str, Any]]] | None:
    """A page of trials by number: ``(total, trials)``. None if no such study."""
    found = _study(session, name)
    if found is None:
        return None
    where = [trials.c.study_id == found[0]]
    if state is not None:
        where.append(_state_in((state,)))
    total = session.scalar(sa.select(sa.func.count()).select_from(trials).where(*where)) or 0
    rows = session.execute(
        sa.select(
            trials.c.trial_id, trials.c.number, trials.c.state, trials.c.datetime_start, trials.c.datetime_complete
        )
        .where(*where)
        .order_by(trials.c.number)
        .limit(limit)
        .offset(offset)
    ).all()
    ids = [r.trial_id for r in rows]
    p = _params_of(session, ids)
    attrs = _attrs_of(session, ids, None if curves else SUMMARY_ATTRS)
    vals: dict[int, list[float | None]] = defaultdict(list)
    for trial_id, value in session.execute(
        sa.select(values.c.trial_id, values.c.value)
        .where(values.c.trial_id.in_(ids))
        .order_by(values.c.trial_id, values.c.objective)
    ):
        vals[trial_id].append(_finite(value))
    steps: dict[int, dict[int, float | None]] = defaultdict(dict)
    for trial_id, step, value in session.execute(
        sa.select(intermediate.c.trial_id, intermediate.c.step, intermediate.c.intermediate_value)
        .where(intermediate.c.trial_id.in_(ids))
        .order_by(intermediate.c.trial_id, intermediate.c.step)
    ):
        steps[trial_id][step] = _finite(value)
    out = []
    for r in rows:
        a = attrs[r.trial_id]
        out.append(
            {
                "number": r.number,
                "state": str(getattr(r.state, "name", r.state)),
                "params": p[r.trial_id],
                "values": vals.get(r.trial_id) or None,
                "intermediate_values": steps[r.trial_id],
                "epochs": max(steps[r.trial_id], default=None),
                "datetime_start": _aware(r.datetime_start),
                "datetime_complete": _aware(r.datetime_complete),
                "user_attrs": {k: v for k, v in a.items() if k != TrialAttr.TRACEBACK} if curves else a,
            }
        )
    return total, out


# -- loaded studies (the engine's and comparisons' reads) ----------------------------------------------------------

#: Trials whose epochs are spent: ended (COMPLETE, PRUNED and FAIL alike); :func:`epochs_spent` adds running ones.
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def load_study(storage_url: str, name: str, *, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """The stored study by name (with ``sampler`` when it is to be driven), or NotFoundError."""
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage_url), sampler=sampler)
    except KeyError:
        raise NotFoundError(f"Study not found: {name!r}") from None


def load_study_or_none(storage_url: str, name: str) -> optuna.Study | None:
    """The stored study, or None: a study no worker has started yet has no Optuna study."""
    try:
        return load_study(storage_url, name)
    except NotFoundError:
        return None


def stored_trials(study: optuna.Study, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
    """The study's trials by number (in ``states`` only, when given), as stored: not copied, so not to be changed."""
    return study.get_trials(deepcopy=False, states=tuple(states) if states is not None else None)


def trial_epochs(trial: FrozenTrial) -> int:
    """The epochs a trial ran, as stored: ``epochs_run``, else its last reported epoch, else 0."""
    ran = trial.user_attrs.get(TrialAttr.EPOCHS_RUN)
    if isinstance(ran, int | float):
        return int(ran)
    return max(trial.intermediate_values, default=0)


def epochs_spent(study: optuna.Study, *, running: bool = True) -> int:
    """The one definition of a study's epochs spent: its ended trials' stored epochs plus its running trials' epochs
    so far (``running=False``: ended trials only). What ``budget.epochs`` counts and the study record stores."""
    states = (*ENDED, TrialState.RUNNING) if running else ENDED
    return sum(trial_epochs(t) for t in stored_trials(study, states))


def study_counts(study: optuna.Study) -> StudyCounts:
    """Trials by state, and the FAIL trials whose kind counts against ``max_failed``."""
    counts = dict.fromkeys(TRIAL_STATES, 0)
    errors = 0
    for t in stored_trials(study):
        counts[t.state.name] += 1
        if t.state == TrialState.FAIL and t.user_attrs.get(TrialAttr.FAIL_KIND) == FailKind.ERROR:
            errors += 1
    return StudyCounts.of_states(counts, errors=errors)


def best_trial(study: optuna.Study, directions: list[str]) -> FrozenTrial | None:
    """The study's best COMPLETE trial, or None: for one objective the leaderboard's first (best value, then the
    earliest trial among equals); for several, the first of the Pareto front."""
    complete = stored_trials(study, (TrialState.COMPLETE,))
    if not complete:
        return None
    if len(directions) > 1:
        front = study.best_trials
        return front[0] if front else None
    sign = -1.0 if directions[0] == "maximize" else 1.0
    return min(complete, key=lambda t: (sign * t.value, t.number))


def ranked_trials(studies: list[optuna.Study], direction: str) -> list[FrozenTrial]:
    """The COMPLETE trials with a finite value over ``studies``, best first by the (single) objective in
    ``direction`` ("maximize" | "minimize"); among equals the earlier study, then the earlier trial (the
    leaderboard's order)."""
    sign = -1.0 if direction == "maximize" else 1.0
    ranked = sorted(
        ((sign * t.value, i, t.number), t)
        for i, study in enumerate(studies)
        for t in stored_trials(study, (TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    )
    return [t for _, t in ranked]


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA), or none when fewer than 2 trials completed or one param is fixed."""
    complete = stored_trials(study, (TrialState.COMPLETE,))
    if len(complete) < 2 or not complete[0].params:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as e:  # e.g. every completed trial has the same value
        log.info("importances of %s: %s", study.study_name, e)
        return {}
