"""What the engine writes for a trial, and how often: a trial's attrs in one transaction (each commit of a SQLite
file waits for its disk), SQLite files in WAL with ``synchronous=NORMAL`` unless FULL is asked for, and a warm
runner's checkpoints at most one per ``checkpoint_interval_s`` of a trial. Real Optuna storage, real training."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy as sa
from ray.tune.search import Searcher

from search_spaces.spec import StudySpec
from service._optuna import close_storage, open_storage, set_user_attrs
from service.core.config import get_settings
from service.core.db import dispose, get_engine
from service.engine.factories import build_distributions
from service.engine.lease import Lease
from service.engine.records import create_or_load
from service.engine.searcher import OptunaStudySearcher
from service.engine.trainable import run_trial
from service.testing.specs import quick_spec
from service.trial_report import TrialAttr

ATTRS = {"a": 1, "b": [1, 2], "c": None, "d": "text"}


def _count_commits(engine: sa.Engine) -> list[int]:
    """A list that gets an item for each transaction on ``engine`` that wrote (Optuna's reads commit too)."""
    commits: list[int] = []

    def statement(conn, _cursor, sql: str, *_args) -> None:
        if sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            conn.info["wrote"] = True

    def commit(conn) -> None:
        if conn.info.pop("wrote", False):
            commits.append(1)

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine, "commit", commit)
    return commits


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    yield url
    close_storage(url)
    dispose(url)


def test_a_trials_attrs_are_written_in_one_commit(sqlite_url):
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage, study_name="attrs")
    trial = study.ask()
    commits = _count_commits(storage.engine)
    set_user_attrs(trial, ATTRS)
    assert len(commits) == 1
    assert trial.user_attrs == ATTRS  # the live trial's own copy, as Trial.set_user_attr keeps it
    assert optuna.load_study(study_name="attrs", storage=sqlite_url).trials[0].user_attrs == ATTRS


def test_other_storages_get_each_attr_as_before():
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    set_user_attrs(trial, ATTRS)
    assert study.trials[0].user_attrs == ATTRS


@pytest.fixture
def searcher(sqlite_url) -> OptunaStudySearcher:
    spec = StudySpec.model_validate(quick_spec("writes", workload={"epochs": 4}))
    study, _ = create_or_load(sqlite_url, spec, resume=False)
    return OptunaStudySearcher(
        study, spec, build_distributions(spec), n_finished=0, n_errors=0, should_stop=lambda: None, driver="w-1"
    )


def test_a_finished_trial_is_told_in_two_commits(searcher, sqlite_url):
    """Its last epoch's value; then its attrs (who told it, curves, summary) with its state, in one transaction."""
    config = searcher.suggest("ray-1")
    results: list[dict] = []
    run_trial(config, lambda result, _folder: results.append(result), trial_id="ray-1")
    for result in results[:-1]:
        searcher.on_trial_result("ray-1", result)
    commits = _count_commits(open_storage(sqlite_url).engine)
    searcher.on_trial_complete("ray-1", results[-1])
    assert len(commits) == 2
    trial = searcher.study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs[TrialAttr.TOLD_BY] == "w-1" and trial.user_attrs[TrialAttr.CHECKPOINT] is None
    assert trial.user_attrs[TrialAttr.EPOCHS_RUN] == 4 and len(trial.user_attrs[TrialAttr.CURVES]["val_acc"]) == 4


@pytest.mark.parametrize("level", [None, "FULL"])
def test_sqlite_files_sync_at_checkpoints_unless_full_is_asked_for(sqlite_url, monkeypatch, level):
    if level is not None:
        monkeypatch.setenv("TVLARS_SQLITE_SYNCHRONOUS", level)
    get_settings.cache_clear()
    try:
        engines = {"optuna": open_storage(sqlite_url).engine, "service": get_engine(sqlite_url)}
        for name, engine in engines.items():
            with engine.connect() as conn:
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            assert (name, mode, synchronous) == (name, "wal", 2 if level == "FULL" else 1)  # FULL 2, NORMAL 1
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(("interval_s", "saved"), [(0.0, [1, 2, 3]), (3600.0, [])])
def test_a_runner_checkpoints_at_most_once_per_interval(searcher, interval_s, saved):
    """Every epoch but the last at 0 s; none for a trial shorter than the interval (it would start again)."""
    config = searcher.suggest("ray-1")
    epochs: list[int] = []
    run_trial(
        config,
        lambda result, folder: epochs.append(result["epoch"]) if folder is not None else None,
        trial_id="ray-1",
        checkpoint_interval_s=interval_s,
    )
    assert epochs == saved
    assert get_settings().checkpoint_interval_s == 0.0  # the tests' own (tests/conftest.py); the service's is 10


def test_a_searcher_whose_lease_is_gone_drops_the_trials_end_and_asks_for_no_more(searcher):
    """Its lease check said yes (``fenced`` never turns True here), then another driver took the study over: the
    trial's end is refused in the write itself, the searcher is fenced, and nothing of the trial is stored."""
    first = Lease(searcher.study, ttl_s=0.4, driver="w-1")
    first.acquire()
    with first.fenced_writes():
        config = searcher.suggest("ray-1")
    results: list[dict] = []
    run_trial(config, lambda result, _folder: results.append(result), trial_id="ray-1")
    first._stop.set()  # the driver pauses past the lease's TTL...
    first._thread.join()
    time.sleep(0.5)
    second = Lease(searcher.study, ttl_s=0.4, driver="w-2")
    second.acquire()  # ...another takes the study over
    with first.fenced_writes():
        searcher.on_trial_complete("ray-1", results[-1])  # no exception: the end is dropped
        assert searcher.fenced
        assert searcher.suggest("ray-2") == Searcher.FINISHED
    second.release()
    (trial,) = searcher.study.trials
    assert trial.state == optuna.trial.TrialState.RUNNING and TrialAttr.TOLD_BY not in trial.user_attrs
    assert trial.intermediate_values == {}  # not even its last epoch's value
