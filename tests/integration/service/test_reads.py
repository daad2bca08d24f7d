"""The SQL reads of Optuna's tables (leaderboard, trial pages, counts) agree with Optuna, on both databases."""

from __future__ import annotations

from datetime import datetime

import optuna
import pytest
from optuna.trial import TrialState

from service.core.db import session_scope
from service.engine import run_study
from service.optuna_queries import leaderboard, trial_counts, trials_page
from service.testing.specs import quick_spec
from tests.conftest import unique_name


@pytest.mark.usefixtures("ray_address")
def test_reads_agree_with_optuna(storage_url):
    spec = quick_spec(unique_name("reads"), budget={"n_trials": 5})
    run_study(spec, storage_url)
    study = optuna.load_study(study_name=spec["name"], storage=storage_url)
    trials = study.get_trials()
    with session_scope(storage_url) as s:
        counts = trial_counts(s, [spec["name"], "no-such-study"])
        board = leaderboard(s, spec["name"], 3)
        board_all = leaderboard(s, spec["name"], 100, include_pruned=True)
        total, page = trials_page(s, spec["name"], limit=2, offset=1, curves=True)
        _, pruned = trials_page(s, spec["name"], limit=100, offset=0, state="PRUNED")
        assert leaderboard(s, "no-such-study", 3) is None and trials_page(s, "no-such-study", 1, 0) is None
    assert counts[spec["name"]].complete == sum(t.state == TrialState.COMPLETE for t in trials)
    assert counts[spec["name"]].pruned == sum(t.state == TrialState.PRUNED for t in trials)
    assert counts["no-such-study"].complete == 0
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))
    assert [(r["number"], r["value"], r["params"]) for r in board] == [
        (t.number, t.value, t.params) for t in complete[:3]
    ]
    assert len(board_all) == 5 and {r["state"] for r in board_all} <= {"COMPLETE", "PRUNED"}
    assert total == 5 and [t["number"] for t in page] == [1, 2]
    for row in page:
        t = trials[row["number"]]
        assert row["params"] == t.params and row["values"] == t.values
        assert row["intermediate_values"] == t.intermediate_values
        assert isinstance(row["datetime_start"], datetime) and row["datetime_start"].tzinfo is not None
        assert row["user_attrs"]["curves"] == t.user_attrs["curves"]
    assert [r["number"] for r in pruned] == [t.number for t in trials if t.state == TrialState.PRUNED]
