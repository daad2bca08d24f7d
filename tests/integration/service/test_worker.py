"""Workers: a killed worker's study is taken over and finished by another; SIGTERM puts a study back in the queue."""

from __future__ import annotations

import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces.spec import StudySpec
from service.core.db import migrate, session_scope
from service.crud import create_study
from service.models import StudyRecord
from service.testing.server import start_server, start_worker, wait_until
from service.testing.specs import quick_spec
from tests.conftest import unique_name

pytestmark = pytest.mark.usefixtures("ray_address")


def _submit(url: str, **overrides) -> tuple[str, str]:
    migrate(url)
    spec = StudySpec.model_validate(quick_spec(unique_name("w"), **overrides))
    with session_scope(url) as s:
        record, _ = create_study(session=s, spec=spec)
        return record.id, spec.name


def _record(url: str, study_id: str) -> StudyRecord:
    with session_scope(url) as s:
        return s.get(StudyRecord, study_id)


def _takeover(url: str, study_id: str, timeout_s: float) -> StudyRecord:
    """The study's record once a worker that took it over has finished it (SUCCEEDED or FAILED)."""
    return wait_until(
        lambda: (r := _record(url, study_id)).state in ("SUCCEEDED", "FAILED") and r, timeout_s, "the takeover"
    )


def _finished_trials(url: str, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def test_a_killed_workers_study_is_taken_over(sqlite_url, tmp_path):
    study_id, name = _submit(
        sqlite_url, budget={"n_trials": 4, "max_concurrent": 1}, scheduler={"name": "none"}, workload={"epochs": 12}
    )
    first = start_worker(sqlite_url, tmp_path, "first")
    try:
        wait_until(lambda: _finished_trials(sqlite_url, name) >= 1, 90, "a finished trial")
    finally:
        first.kill()  # SIGKILL: no clean-up, the study stays RUNNING with a stale heartbeat
        first.wait()
    assert _record(sqlite_url, study_id).state == "RUNNING"
    second = start_worker(sqlite_url, tmp_path, "second")
    try:
        record = _takeover(sqlite_url, study_id, 120)
    finally:
        second.terminate()
        second.wait(timeout=60)
    assert record.state == "SUCCEEDED", record.error
    assert record.claims == 2
    study = optuna.load_study(study_name=name, storage=sqlite_url)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_sigterm_puts_the_running_study_back_in_the_queue(sqlite_url, tmp_path):
    study_id, name = _submit(
        sqlite_url, budget={"n_trials": 6, "max_concurrent": 1}, scheduler={"name": "none"}, workload={"epochs": 30}
    )
    worker = start_worker(sqlite_url, tmp_path, "term")
    try:
        wait_until(lambda: _record(sqlite_url, study_id).state == "RUNNING", 90, "RUNNING")
        wait_until(lambda: _finished_trials(sqlite_url, name) >= 1, 90, "a finished trial")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    record = _record(sqlite_url, study_id)
    assert record.state == "QUEUED" and record.error is None  # for the next worker to resume, not CANCELLED
    study = optuna.load_study(study_name=name, storage=sqlite_url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 1


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_to_serve_stops_its_workers_too(sqlite_url, tmp_path):
    # uvicorn re-raises the SIGTERM it shut down on: `serve` must still stop its workers, not orphan them
    server = start_server(sqlite_url, tmp_path, workers=1)
    workers = _children(server.proc.pid)
    assert len(workers) == 1 and _alive(workers[0])
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=60)
    wait_until(lambda: not _alive(workers[0]), 45, "the worker to stop with its serve")
