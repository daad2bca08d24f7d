"""The driver's lease and the two conflicts: a held lease (try later) is not a taken name (never works)."""

from __future__ import annotations

import time

import optuna
import pytest

from search_spaces.spec import StudySpec
from service._optuna import open_storage, read_study_system_attr, write_study_system_attr
from service.engine.lease import Lease
from service.engine.records import create_or_load
from service.errors import ConflictError, FencedError, LeaseHeldError, NameTakenError
from service.testing.specs import quick_spec
from service.trial_report import StudyAttr
from tests.conftest import unique_name


def test_a_live_lease_keeps_a_second_driver_out_until_released(sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url), study_name=unique_name("lease"))
    with Lease(study, ttl_s=30):
        with pytest.raises(LeaseHeldError, match="being run by another driver") as e:
            Lease(study, ttl_s=30).acquire()
        assert isinstance(e.value, ConflictError)
    second = Lease(study, ttl_s=30)
    second.acquire()
    second.release()
    assert read_study_system_attr(study, StudyAttr.LEASE)["released"] is True


def test_a_stale_lease_is_taken_over(sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url), study_name=unique_name("stale"))
    other = {"id": "other", "host": "elsewhere", "pid": 1}  # another host: only the heartbeat's age can tell
    write_study_system_attr(study, StudyAttr.LEASE, {**other, "heartbeat": time.time()})
    assert Lease(study, ttl_s=30).holder() == {**other, "heartbeat": pytest.approx(time.time(), abs=5)}
    write_study_system_attr(study, StudyAttr.LEASE, {**other, "heartbeat": time.time() - 31})
    assert Lease(study, ttl_s=30).holder() is None


def test_a_name_taken_by_another_spec_is_name_taken_not_lease_held(sqlite_url):
    name = unique_name("taken")
    optuna.create_study(storage=open_storage(sqlite_url), study_name=name)  # an Optuna study outside the service
    with pytest.raises(NameTakenError, match="exists with a different spec"):
        create_or_load(sqlite_url, StudySpec.model_validate(quick_spec(name)), resume=True)


def test_a_driver_whose_lease_was_taken_over_is_fenced_and_cannot_renew_or_release_it(sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url), study_name=unique_name("fence"))
    first = Lease(study, ttl_s=0.4, driver="worker-a")
    first.acquire()
    first._stop.set()  # the first driver pauses: no renewal (its thread sleeps out a beat and ends)
    first._thread.join()
    time.sleep(0.5)  # past the TTL: the lease is stale
    second = Lease(study, ttl_s=0.4, driver="worker-b")
    second.acquire()  # a compare-and-set over the stale lease
    assert read_study_system_attr(study, StudyAttr.LEASE)["by"] == "worker-b"
    assert not first.holds()  # its check (renewing over what it last wrote) fails: fenced for good
    assert not first._swap()
    first.release()  # ...and its release leaves the new holder's lease alone
    lease = read_study_system_attr(study, StudyAttr.LEASE)
    assert lease["by"] == "worker-b" and not lease.get("released")
    assert second.holds()
    second.release()
    assert read_study_system_attr(study, StudyAttr.LEASE)["released"] is True


def test_two_drivers_racing_for_a_stale_lease_cannot_both_take_it(sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url), study_name=unique_name("race"))
    write_study_system_attr(study, StudyAttr.LEASE, {"id": "dead", "host": "elsewhere", "pid": 1, "heartbeat": 0})
    a, b = Lease(study, ttl_s=30), Lease(study, ttl_s=30)
    assert a.holder() is None and b.holder() is None  # both see the stale lease...
    stale = a._read()[0]
    a._written = b._written = stale
    assert a._swap() is True  # ...both try the compare-and-set over it: one wins
    assert b._swap() is False
    with pytest.raises(LeaseHeldError):
        Lease(study, ttl_s=30).acquire()
    a.release()


def test_a_write_after_the_lease_was_taken_over_is_refused_even_without_a_check_first(sqlite_url):
    """The gap between a check and a write (a driver paused right after :meth:`Lease.holds` said yes): each write to
    a trial proves the lease in its own transaction, so the paused driver's tell, report and attrs write nothing."""
    study = optuna.create_study(storage=open_storage(sqlite_url), study_name=unique_name("gap"))
    first = Lease(study, ttl_s=0.4, driver="worker-a")
    first.acquire()
    with first.fenced_writes():
        trial = study.ask()
        trial.report(0.5, step=1)  # the lease is ours: written
    assert first.holds()  # the check a driver makes before writing: yes... then it pauses
    first._stop.set()
    first._thread.join()
    time.sleep(0.5)
    second = Lease(study, ttl_s=0.4, driver="worker-b")
    second.acquire()
    with first.fenced_writes():  # ...and resumes straight into its writes, without checking again
        with pytest.raises(FencedError, match="another driver holds it"):
            study.tell(trial, 0.9)
        with pytest.raises(FencedError):
            trial.set_user_attr("told_by", "worker-a")
        with pytest.raises(FencedError):
            study._storage.set_trial_intermediate_value(trial._trial_id, 2, 0.7)
        with pytest.raises(FencedError):
            study.ask()
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.state == optuna.trial.TrialState.RUNNING and "told_by" not in stored.user_attrs
    assert stored.intermediate_values == {1: 0.5} and len(study.trials) == 1
    with second.fenced_writes():  # the new holder writes as usual
        study.tell(trial, 0.8)
    assert study._storage.get_trial(trial._trial_id).value == 0.8
    second.release()
    study.ask()  # outside a fence nothing is checked (a plain Optuna user of the same storage)
