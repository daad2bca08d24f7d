"""The driver's lease and the two conflicts: a held lease (try later) is not a taken name (never works)."""

from __future__ import annotations

import time

import optuna
import pytest

from search_spaces.spec import StudySpec
from service._optuna import open_storage, read_study_system_attr, write_study_system_attr
from service.engine.lease import Lease
from service.engine.records import create_or_load
from service.errors import ConflictError, LeaseHeldError, NameTakenError
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
