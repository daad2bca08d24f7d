"""The worker tells a taken name (the study FAILs at once) from a held lease (requeued), without Ray."""

from __future__ import annotations

import optuna

from search_spaces.spec import StudySpec
from service._optuna import open_storage
from service.core.config import Settings
from service.core.db import migrate, session_scope
from service.crud import claim_next_study, create_study
from service.engine.lease import Lease
from service.engine.records import create_or_load
from service.models import StudyRecord
from service.testing.specs import quick_spec
from service.worker import Worker
from tests.conftest import unique_name


def _claimed(url: str, spec: StudySpec, worker: Worker) -> StudyRecord:
    migrate(url)
    with session_scope(url) as s:
        create_study(session=s, spec=spec)
    with session_scope(url) as s:
        return claim_next_study(session=s, worker_id=worker.id, stale_after_s=60)


def test_a_name_held_by_an_outside_optuna_study_fails_the_study_at_once(sqlite_url):
    spec = StudySpec.model_validate(quick_spec(unique_name("outside")))
    optuna.create_study(storage=open_storage(sqlite_url), study_name=spec.name)
    worker = Worker(Settings(database_url=sqlite_url, worker_stale_s=60))
    record = _claimed(sqlite_url, spec, worker)
    worker._run_one(record.id, record.name, dict(record.spec), record.resume)
    with session_scope(sqlite_url) as s:
        after = s.get(StudyRecord, record.id)
    assert after.state == "FAILED" and "exists with a different spec" in after.error and after.finished_at


def test_a_held_lease_requeues_the_study(sqlite_url):
    spec = StudySpec.model_validate(quick_spec(unique_name("held")))
    study, _ = create_or_load(sqlite_url, spec, resume=False)
    worker = Worker(Settings(database_url=sqlite_url, worker_stale_s=0.2))  # back-off: worker_stale_s / 2
    record = _claimed(sqlite_url, spec, worker)
    with Lease(study, ttl_s=30):
        worker._run_one(record.id, record.name, dict(record.spec), record.resume)
    with session_scope(sqlite_url) as s:
        after = s.get(StudyRecord, record.id)
    assert after.state == "QUEUED" and after.error is None and after.finished_at is None
