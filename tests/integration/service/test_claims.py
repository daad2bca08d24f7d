"""How workers find their next study, on PostgreSQL: an idle worker is woken by NOTIFY when a study enters the queue
(real database, real LISTEN). The claim order is in tests/unit/service/test_claims.py."""

from __future__ import annotations

import threading
import time

from service.core.config import Settings
from service.core.db import migrate, session_scope
from service.crud import finish_study
from service.models import StudyRecord, StudyState
from service.worker import Worker
from tests.unit.service.test_claims import _claim, _queue


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
