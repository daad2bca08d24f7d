"""Cancels are never lost: a study whose cancel was requested ends CANCELLED when its worker puts it back in the queue
instead of finishing it — on shutdown, on a lease another driver holds, on a database outage — and a silent
worker's study with a cancel requested is cancelled, never claimed to run again.

The record operations of tests/unit/service/test_cancels.py run here on PostgreSQL. The shutdown and outage paths run
a real worker process on a private PostgreSQL (``fault_db``); the lease-held path
runs the worker's own study routine in process against it, with the lease held by a live driver in this process.
"""

from __future__ import annotations

import signal
import time

import pytest

from service.core.config import Settings
from service.core.db import session_scope
from service.crud import claim_next_study
from service.engine.lease import Lease
from service.engine.records import create_or_load
from service.testing.server import start_worker, wait_until
from service.worker import Worker
from tests.unit.service.test_cancels import (  # noqa: F401 (the record operations, collected here on PostgreSQL)
    _cancel,
    _record,
    _running_trial_with_epochs,
    _submit,
    test_a_cancel_reads_the_study_as_locked_not_as_the_session_loaded_it,
    test_a_cancel_withdrawn_while_the_run_stopped_puts_the_study_back_in_the_queue,
    test_a_requeue_keeps_a_requested_cancel_and_ends_the_study_cancelled,
    test_a_silent_worker_whose_study_a_claim_cancelled_and_a_resume_queued_writes_nothing,
    test_a_silent_workers_study_with_a_cancel_requested_is_cancelled_not_claimed,
    test_stopping_a_comparison_leaves_a_study_that_ended_meanwhile_as_it_ended,
)


@pytest.fixture(params=["postgresql"])
def storage_url(own_pg_url) -> str:
    """A PostgreSQL database of the test's own: these tests claim studies by hand, which the session's ``server``
    worker (on the shared ``pg_url``) would race for."""
    return own_pg_url


# -- the three paths, with PostgreSQL -------------------------------------------------------------------------------


def test_a_cancel_requested_while_the_lease_is_held_elsewhere_ends_the_study_cancelled(fault_db):
    study_id, spec = _submit(fault_db)
    study, _ = create_or_load(fault_db, spec, resume=False)
    worker = Worker(Settings(database_url=fault_db, worker_stale_s=0.2))
    with session_scope(fault_db) as s:
        claim_next_study(session=s, worker_id=worker.id, stale_after_s=60)
    assert _cancel(fault_db, study_id).cancel_requested  # the user got 202 while the study was RUNNING
    with Lease(study, ttl_s=30):  # a live driver elsewhere holds the study: the worker requeues it
        worker._run_one(study_id, spec.name, spec.canonical(), False)
    after = _record(fault_db, study_id)
    assert after.state == "CANCELLED" and after.claims == 1 and not after.cancel_requested


@pytest.mark.slow
@pytest.mark.usefixtures("ray_address")
def test_a_cancel_requested_before_an_outage_or_a_shutdown_ends_the_study_cancelled(fault_db, outage, tmp_path):
    """One worker process (its start-up is most of the cost): first a cancel, then at once an outage; then a cancel,
    then at once SIGTERM. Either way the worker puts the study back in the queue (or, when even that write gives
    up, leaves it RUNNING to go stale), and the study must end CANCELLED, never claimed again."""
    long_study = {
        "budget": {"n_trials": 3, "max_concurrent": 1},
        "scheduler": {"name": "none"},
        "workload": {"epochs": 30},
    }
    first, spec = _submit(fault_db, **long_study)
    # the engine and the worker give up on the database after 2 s: the outage (8 s) ends the run in a requeue, whose
    # own write may give up too (then the study's heartbeat goes stale and the next claim finds the cancel)
    worker = start_worker(
        fault_db,
        tmp_path,
        "cancels",
        TVLARS_WORKER_HEARTBEAT_S="3",
        TVLARS_WORKER_STALE_S="6",
        TVLARS_DB_OUTAGE_RETRY_S="2",
    )
    try:
        wait_until(lambda: _running_trial_with_epochs(fault_db, spec.name), 180, "a trial reporting epochs")
        assert _cancel(fault_db, first).cancel_requested
        with outage():
            time.sleep(8)
        after = wait_until(
            lambda: (r := _record(fault_db, first)).state not in ("RUNNING", "QUEUED") and r, 90, "the study to end"
        )
        assert after.state == "CANCELLED", (after.state, after.error)
        assert after.claims == 1  # never claimed to run again
        assert worker.poll() is None, "the worker died"

        second, spec = _submit(fault_db, **long_study)
        wait_until(lambda: _running_trial_with_epochs(fault_db, spec.name), 180, "a trial reporting epochs")
        assert _cancel(fault_db, second).cancel_requested
        worker.send_signal(signal.SIGTERM)  # it stops its run and puts the study back in the queue
        assert worker.wait(timeout=90) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    after = _record(fault_db, second)
    assert after.state == "CANCELLED", (after.state, after.error)
    assert after.claims == 1 and not after.cancel_requested
