"""Cancels are never lost: a study whose cancel was requested ends CANCELLED when its worker puts it back in the queue
instead of finishing it — on shutdown, on a lease another driver holds, on a database outage — and a silent
worker's study with a cancel requested is cancelled, never claimed to run again.

Here the record operations on SQLite; tests/integration/service/test_cancels.py runs them on PostgreSQL, and the three
paths: the shutdown and outage paths run a real worker process on a private PostgreSQL (``fault_db``); the lease-held
path runs the worker's own study routine in process against it, with the lease held by a live driver in this process.
"""

from __future__ import annotations

from datetime import timedelta

import optuna
import pytest
import sqlalchemy as sa

from search_spaces.spec import StudySpec
from service.core.db import migrate, session_scope
from service.crud import cancel_study, claim_next_study, create_study, finish_study
from service.models import StudyRecord, StudyState, utcnow
from service.testing.specs import quick_spec
from tests.conftest import unique_name


@pytest.fixture(params=["sqlite"])
def storage_url(request, tmp_path) -> str:
    """SQLite here; tests/integration/service/test_cancels.py gives these tests a PostgreSQL database of their own."""
    return f"sqlite:///{tmp_path / 'studies.db'}"


def _submit(url: str, **overrides) -> tuple[str, StudySpec]:
    migrate(url)
    spec = StudySpec.model_validate(quick_spec(unique_name("c"), **overrides))
    with session_scope(url) as s:
        record, _ = create_study(session=s, spec=spec)
        return record.id, spec


def _record(url: str, study_id: str) -> StudyRecord:
    with session_scope(url) as s:
        record = s.get(StudyRecord, study_id)
        s.expunge(record)
        return record


def _cancel(url: str, study_id: str) -> StudyRecord:
    """What ``POST /v1/studies/{id}/cancel`` does."""
    with session_scope(url) as s:
        record = cancel_study(session=s, study_id=study_id)
        s.flush()
        s.expunge(record)
        return record


def _running_trial_with_epochs(url: str, name: str) -> bool:
    try:
        trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return False
    return any(t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values for t in trials)


# -- the record operations (on PostgreSQL: tests/integration/service/test_cancels.py) ----------------------------------


def test_a_requeue_keeps_a_requested_cancel_and_ends_the_study_cancelled(storage_url):
    study_id, _ = _submit(storage_url)
    with session_scope(storage_url) as s:
        assert claim_next_study(session=s, worker_id="w1", stale_after_s=60).id == study_id
    assert _cancel(storage_url, study_id).cancel_requested  # RUNNING: a request its worker acts on
    with session_scope(storage_url) as s:  # ...but the worker was stopping anyway: it puts the study back
        finish_study(session=s, study_id=study_id, worker_id="w1", state=StudyState.QUEUED)
    after = _record(storage_url, study_id)
    assert after.state == "CANCELLED" and after.finished_at is not None and not after.cancel_requested
    with session_scope(storage_url) as s:
        assert claim_next_study(session=s, worker_id="w2", stale_after_s=60) is None


def test_a_silent_workers_study_with_a_cancel_requested_is_cancelled_not_claimed(storage_url):
    study_id, _ = _submit(storage_url)
    with session_scope(storage_url) as s:
        claim_next_study(session=s, worker_id="w1", stale_after_s=60)
    _cancel(storage_url, study_id)
    with session_scope(storage_url) as s:  # w1 lost the database before it could record anything: it went silent
        s.execute(
            sa.update(StudyRecord)
            .where(StudyRecord.id == study_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )
    with session_scope(storage_url) as s:
        assert claim_next_study(session=s, worker_id="w2", stale_after_s=60) is None
    after = _record(storage_url, study_id)
    assert after.state == "CANCELLED" and after.claims == 1 and after.worker_id == "w1"
