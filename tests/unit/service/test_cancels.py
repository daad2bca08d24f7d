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
from service.core.config import Settings
from service.core.db import migrate, session_scope
from service.crud import (
    Beat,
    cancel_if_live,
    cancel_study,
    claim_next_study,
    create_study,
    finish_study,
    heartbeat,
    record_epochs_spent,
    resume_study,
)
from service.models import StudyRecord, StudyState, utcnow
from service.testing.specs import quick_spec
from service.worker import Worker
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


def test_a_cancel_withdrawn_while_the_run_stopped_puts_the_study_back_in_the_queue(storage_url):
    """The soak's cancel → resume of a comparison: its running study's worker acted on the cancel, the resume withdrew
    it before the run's end was recorded. The study must run on (not end CANCELLED, which fails the comparison)."""
    study_id, _ = _submit(storage_url)
    with session_scope(storage_url) as s:
        claim_next_study(session=s, worker_id="w1", stale_after_s=60)
    assert _cancel(storage_url, study_id).cancel_requested
    with session_scope(storage_url) as s:  # what resume_comparison does to a RUNNING study of the comparison
        s.get(StudyRecord, study_id).cancel_requested = False
    with session_scope(storage_url) as s:  # the worker's run had already stopped on the cancel
        finish_study(session=s, study_id=study_id, worker_id="w1", state=StudyState.CANCELLED, error="cancelled")
    after = _record(storage_url, study_id)
    assert after.state == "QUEUED" and after.error is None and after.finished_at is None
    with session_scope(storage_url) as s:
        assert claim_next_study(session=s, worker_id="w2", stale_after_s=60).id == study_id


def test_a_silent_worker_whose_study_a_claim_cancelled_and_a_resume_queued_writes_nothing(storage_url):
    """w1 went silent with a cancel requested; a claim ended the study CANCELLED (its row still names w1) and the
    user resumed it. When w1 comes back, its heartbeat finds the study no longer its own (it is fenced) and its
    writes (epochs spent, the end of its run) change nothing: the resumed study stays QUEUED."""
    study_id, _ = _submit(storage_url)
    with session_scope(storage_url) as s:
        claim_next_study(session=s, worker_id="w1", stale_after_s=60)
    _cancel(storage_url, study_id)
    with session_scope(storage_url) as s:
        s.execute(
            sa.update(StudyRecord)
            .where(StudyRecord.id == study_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )
    with session_scope(storage_url) as s:
        assert claim_next_study(session=s, worker_id="w2", stale_after_s=60) is None  # ...but it CANCELLED the study
    with session_scope(storage_url) as s:
        resume_study(session=s, study_id=study_id)
    with session_scope(storage_url) as s:
        assert heartbeat(session=s, worker_id="w1", study_id=study_id) == Beat(cancel_requested=False, held=False)
        record_epochs_spent(session=s, study_id=study_id, worker_id="w1", epochs=99)
    with session_scope(storage_url) as s:
        finish_study(session=s, study_id=study_id, worker_id="w1", state=StudyState.SUCCEEDED, outcome={})
    after = _record(storage_url, study_id)
    assert after.state == "QUEUED" and after.epochs_spent == 0 and after.finished_at is None
    with session_scope(storage_url) as s:
        assert claim_next_study(session=s, worker_id="w2", stale_after_s=60).id == study_id


def test_a_cancel_reads_the_study_as_locked_not_as_the_session_loaded_it(storage_url):
    """The soak's comparison cancel racing a claim: the cancel's session had loaded the comparison's studies (one
    QUEUED), a worker claimed that one before the cancel locked its row. The cancel must see it RUNNING (a request
    its worker acts on), not end it CANCELLED under the worker running it."""
    study_id, _ = _submit(storage_url)
    with session_scope(storage_url) as s:
        loaded = s.get(StudyRecord, study_id)  # as cancel_comparison's studies_of loads (and holds) it
        assert loaded.state == "QUEUED"
        with session_scope(storage_url) as other:
            assert claim_next_study(session=other, worker_id="w1", stale_after_s=60).id == study_id
        record = cancel_study(session=s, study_id=study_id)
        assert record.state == "RUNNING" and record.cancel_requested
    after = _record(storage_url, study_id)
    assert after.state == "RUNNING" and after.cancel_requested and after.worker_id == "w1"


def test_stopping_a_comparison_leaves_a_study_that_ended_meanwhile_as_it_ended(storage_url):
    """cancel_comparison (and a comparison failing) cancel its live studies as read; one that ended since is left
    SUCCEEDED, and the comparison's cancel does not fail for it (no 409)."""
    study_id, _ = _submit(storage_url)
    with session_scope(storage_url) as s:
        claim_next_study(session=s, worker_id="w1", stale_after_s=60)
    with session_scope(storage_url) as s:
        loaded = s.get(StudyRecord, study_id)
        assert loaded.state == "RUNNING"
        with session_scope(storage_url) as other:
            finish_study(session=other, study_id=study_id, worker_id="w1", state=StudyState.SUCCEEDED, outcome={})
        cancel_if_live(session=s, study_id=study_id)
    after = _record(storage_url, study_id)
    assert after.state == "SUCCEEDED" and not after.cancel_requested


def test_a_cancel_seen_by_a_heartbeat_is_never_the_next_studys(monkeypatch, tmp_path):
    """A heartbeat that learns of study A's cancel as A ends and B starts on the worker must not cancel B."""
    worker = Worker(Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}"), worker_id="w1")
    worker._current = "A"

    def beat_while_a_ends(*, session, worker_id, study_id):
        with worker._lock:  # what _run_one does as A ends and B starts
            worker._current = "B"
            worker._cancel.clear()
        return Beat(cancel_requested=True, held=True)

    monkeypatch.setattr("service.worker.heartbeat", beat_while_a_ends)
    worker.beat()
    assert not worker._cancel.is_set()
    worker.beat()  # B's own cancel (the stub says one is requested) is heard
    assert worker._cancel.is_set()
