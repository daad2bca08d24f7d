"""How workers find their next study: a comparison's studies largest first, other studies oldest first; on
PostgreSQL an idle worker is woken by NOTIFY when a study enters the queue (real database, real LISTEN)."""

from __future__ import annotations

import threading
import time

from search_spaces.spec import StudySpec
from service.core.config import Settings
from service.core.db import migrate, session_scope
from service.crud import claim_next_study, create_study, finish_study
from service.models import StudyRecord, StudyState
from service.testing.specs import quick_spec
from service.worker import Worker

from ..conftest import unique_name


def _queue(url: str, epochs: int, comparison: str | None = None) -> str:
    spec = StudySpec.model_validate(quick_spec(unique_name("claim"), budget={"n_trials": 2, "epochs": epochs}))
    with session_scope(url) as s:
        record, _ = create_study(session=s, spec=spec)
        record.comparison_id = comparison
        return record.id


def _claim(url: str) -> str | None:
    with session_scope(url) as s:
        record = claim_next_study(session=s, worker_id="w1", stale_after_s=60)
        return None if record is None else record.id


def test_a_comparisons_largest_study_is_claimed_first_and_other_studies_oldest_first(sqlite_url):
    migrate(sqlite_url)
    plain_old = _queue(sqlite_url, 6)
    small, large, middle = (_queue(sqlite_url, e, comparison="c1") for e in (6, 18, 12))
    plain_new = _queue(sqlite_url, 30)
    assert [_claim(sqlite_url) for _ in range(6)] == [plain_old, large, middle, small, plain_new, None]


def test_an_idle_worker_is_woken_by_notify_when_a_study_is_queued_or_requeued(own_pg_url):
    migrate(own_pg_url)
    worker = Worker(Settings(database_url=own_pg_url, worker_poll_s=30))
    listener = threading.Thread(target=worker._listen_loop, daemon=True)
    listener.start()
    try:
        assert worker._wake.wait(20), "LISTEN never connected"  # set once on connecting
        worker._wake.clear()
        assert not worker._wake.wait(0.5)  # nothing queued: no wake-up
        started = time.monotonic()
        study_id = _queue(own_pg_url, 6)
        assert worker._wake.wait(5), "no NOTIFY for a submitted study"
        assert time.monotonic() - started < 2
        worker._wake.clear()
        assert _claim(own_pg_url) == study_id
        with session_scope(own_pg_url) as s:  # the worker stopping puts it back in the queue: another is woken
            finish_study(session=s, study_id=study_id, worker_id="w1", state=StudyState.QUEUED)
        assert worker._wake.wait(5), "no NOTIFY for a requeued study"
        with session_scope(own_pg_url) as s:
            assert s.get(StudyRecord, study_id).state == StudyState.QUEUED
    finally:
        worker.stop()
        listener.join(timeout=10)
    assert not listener.is_alive()
