"""Fenced workers, with real processes on a private PostgreSQL: the worker driving a study is paused (SIGSTOP) longer
than both ``worker_stale_s`` and the lease TTL, another worker takes the study over, and the first, resumed, learns
at once that it lost the study and tells Optuna nothing more.

The test prints its timeline (run with ``-s`` to see it): the pause, the re-claim, the resume, and what the stale
worker did, from the workers' own logs.
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages._rdb.models import TrialUserAttributeModel

from service._optuna import RetryingRDBStorage, close_storage, open_storage
from service.core.config import get_settings
from service.core.db import engine_kwargs, get_engine
from service.engine.lease import Lease
from service.errors import FencedError
from service.models import StudyRecord, WorkerRecord
from service.testing.server import start_server, start_worker, wait_state, wait_until
from service.testing.specs import quick_spec
from service.trial_report import FailKind, TrialAttr
from tests.conftest import unique_name
from tests.unit.service.engine.test_lease import (
    test_a_write_after_the_lease_was_taken_over_is_refused_even_without_a_check_first as _refused,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_address")]

#: Both small, so the takeover comes within seconds; the pause outlasts both.
STALE_S, LEASE_TTL_S, PAUSE_S = 3, 3, 8
FAST = {"TVLARS_WORKER_STALE_S": str(STALE_S), "TVLARS_LEASE_TTL_S": str(LEASE_TTL_S)}


class Timeline:
    """What happened when, in seconds from the test's start; a worker's log line at the time it was logged."""

    def __init__(self) -> None:
        self.t0, self.wall0 = time.monotonic(), time.time()
        self.lines: list[str] = []

    def __call__(self, what: str, at: float | None = None) -> None:
        line = f"t={(time.monotonic() - self.t0) if at is None else at:6.1f} s  {what}"
        self.lines.append(line)
        print(line, flush=True)

    def logged(self, who: str, line: str) -> None:
        stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        self(f"{who} logged: {line[24:].split(': ', 1)[-1][:150]}", at=stamp - self.wall0)


def _holder(engine: sa.Engine, study_id: str) -> tuple[str | None, int | None]:
    """(worker id, pid) of the worker the study's record names now."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(StudyRecord.worker_id, WorkerRecord.pid)
            .join(WorkerRecord, WorkerRecord.id == StudyRecord.worker_id, isouter=True)
            .where(StudyRecord.id == study_id)
        ).one()
    return row[0], row[1]


def _stopped(pid: int) -> bool:
    """The process is stopped by a signal (its state in ``/proc/<pid>/stat`` is ``T``)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def _trials(storage, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


@pytest.mark.timeout(600)
def test_a_paused_worker_whose_study_was_taken_over_tells_optuna_nothing_when_resumed(fault_db, tmp_path):
    say = Timeline()
    api = start_server(fault_db, tmp_path, workers=0, ready=False)
    # each worker on a Ray of its own (as when this test runs alone): on the session's shared 2-CPU Ray, the paused
    # worker's runner and another test's trial can hold every CPU, and the new driver then waits for one
    workers = {name: start_worker(fault_db, tmp_path, name, RAY_ADDRESS="local", **FAST) for name in ("one", "two")}
    spec = quick_spec(
        unique_name("fence"),
        budget={"n_trials": 2, "max_concurrent": 1},
        scheduler={"name": "none"},
        workload={"epochs": 6},
    )
    engine = sa.create_engine(fault_db, poolclass=sa.pool.NullPool)
    storage = optuna.storages.RDBStorage(fault_db)
    paused = None
    try:
        with api.client() as c:
            study_id = c.post("/v1/studies", json=spec).json()["id"]
            say(f"submitted study {spec['name']} (2 trials of 6 epochs, one at a time)")
            # the driver is well into a trial: it has reported epochs of it
            wait_until(
                lambda: any(
                    t.state == optuna.trial.TrialState.RUNNING and len(t.intermediate_values) >= 1
                    for t in _trials(storage, spec["name"])
                ),
                180,
                "the driver's first trial to report epochs",
            )
            stale_id, pid = _holder(engine, study_id)
            paused = next(name for name, p in workers.items() if p.pid == pid)
            other = next(name for name in workers if name != paused)
            os.kill(pid, signal.SIGSTOP)
            paused_at = time.monotonic()
            wait_until(lambda: _stopped(pid), 10, "the worker to stop")
            # what the driver wrote before the pause, read once it can write no more (a commit it sent just before
            # the signal lands within milliseconds): a trial still RUNNING now is one it must never tell
            time.sleep(1.0)
            before = {t.number: t.state for t in _trials(storage, spec["name"])}
            running = [n for n, s in before.items() if s == optuna.trial.TrialState.RUNNING]
            say(f"SIGSTOP worker {paused} ({stale_id}) while it drives trial(s) {running}; trials then: {before}")

            new_id = wait_until(
                lambda: (h := _holder(engine, study_id)[0]) != stale_id and h,
                60,
                "the other worker to claim the study",
            )
            say(f"worker {other} ({new_id}) claimed the study (the paused one's heartbeat was {STALE_S} s stale)")
            wait_until(
                lambda: any(t.user_attrs.get(TrialAttr.DRIVER) == new_id for t in _trials(storage, spec["name"])),
                60,
                "the new driver to take the lease and start a trial",
            )
            say(f"worker {other} took the lease (TTL {LEASE_TTL_S} s) and drives: it continued or started a trial")
            time.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
            os.kill(pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            say(f"SIGCONT worker {paused} after a pause of {PAUSE_S} s or more")

            done = wait_state(c, study_id, ("SUCCEEDED", "FAILED", "CANCELLED"), timeout_s=300)
            say(f"study {done['state']}: {done['progress']}")
            time.sleep(2)  # the stale worker's last words, if any
        stale_log = (tmp_path / f"worker-{paused}.log").read_text()
        notable = [line for line in stale_log.splitlines() if re.search("fenced|lost the|dropped", line)]
        for line in notable:  # in the order it logged them
            say.logged(f"worker {paused}", line)
        fenced = [line for line in notable if "fenced" in line or "lost the" in line]
        say(f"worker {paused} fenced: {bool(fenced)} (resumed {time.monotonic() - resumed_at:.0f} s before this line)")

        trials = _trials(storage, spec["name"])
        names = {stale_id: f"{paused} (stale)", new_id: other, None: "-"}
        for t in trials:
            attrs = t.user_attrs
            say(
                f"trial {t.number}: {t.state.name}, asked by {names.get(attrs.get(TrialAttr.DRIVER))}, told by "
                f"{names.get(attrs.get(TrialAttr.TOLD_BY))}, restarts {attrs.get(TrialAttr.RESTARTS, 0)}, "
                f"resumed from epoch {attrs.get(TrialAttr.RESUMED_FROM_EPOCH)} {attrs.get(TrialAttr.FAIL_REASON) or ''}"
            )
        assert done["state"] == "SUCCEEDED", done["error"]
        assert done["progress"]["finished"] == 2
        # one driver at a time: every trial that was not finished when the first worker paused was told by the
        # new driver (or failed by it as an orphan) — never by the stale one
        for t in trials:
            if t.number in before and before[t.number].is_finished():
                assert t.user_attrs.get(TrialAttr.TOLD_BY) == stale_id
                continue
            assert t.user_attrs.get(TrialAttr.TOLD_BY) in (new_id, None), (t.number, t.user_attrs)
            if t.user_attrs.get(TrialAttr.DRIVER) is None:
                # asked by the stale driver just before the pause (Optuna's ask commits before the driver records
                # itself on the trial, and that record was refused after the take-over): the new driver FAILs it as
                # an orphan, as it would a dead driver's
                assert t.number in before and t.state == optuna.trial.TrialState.FAIL, (t.number, t.state)
                assert t.user_attrs.get(TrialAttr.FAIL_KIND) == FailKind.ORPHANED, t.user_attrs
            else:
                assert t.user_attrs.get(TrialAttr.DRIVER) in (new_id, stale_id)
            if t.number not in before:  # asked for after the pause: by the new driver only
                assert t.user_attrs.get(TrialAttr.DRIVER) == new_id
        assert sorted(t.number for t in trials) == list(range(len(trials)))
        # the stale worker learned it lost the study, and wrote nothing: no write failed on a finished trial
        assert fenced, stale_log[-3000:]
        assert "UpdateFinishedTrialError" not in stale_log
        assert not re.search(r"study \S+: (FAILED|SUCCEEDED|CANCELLED)", stale_log.split(fenced[0])[-1])
        assert not re.search(r"trial \d+ FAIL", stale_log.split(fenced[0])[-1])
        with api.client() as c:  # and the record says what the new driver recorded
            again = c.get(f"/v1/studies/{study_id}").json()
            assert again["state"] == "SUCCEEDED" and again["error"] is None
        for p in workers.values():
            assert p.poll() is None, "a worker died"
    finally:
        for p in workers.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in workers.values():
            try:
                p.wait(timeout=60)
            except Exception:
                p.kill()
        api.stop()
        storage.engine.dispose()
        engine.dispose()
        (tmp_path / "timeline.txt").write_text("\n".join(say.lines) + "\n")


def test_a_write_after_the_lease_was_taken_over_is_refused_on_postgresql(own_pg_url):
    # the unit test's writes, on PostgreSQL: the no-op UPDATE of the lease row that each write makes first
    _refused(own_pg_url)


def test_a_driver_stopped_inside_a_write_holds_the_take_over_back_only_until_its_transaction_is_ended(
    own_pg_url, monkeypatch
):
    """A write's lease proof locks the lease row until the write commits; a driver stopped between the two (SIGSTOP,
    a frozen VM, a cut-off network) would keep every other driver from taking the study over for as long as it is
    stopped. PostgreSQL ends a transaction left idle for ``TVLARS_DB_IDLE_IN_TRANSACTION_S``: the take-over waits
    that long at most, the stopped write is rolled back, and the driver, resumed, is fenced."""
    monkeypatch.setenv("TVLARS_DB_IDLE_IN_TRANSACTION_S", "2")
    get_settings.cache_clear()
    other = None
    try:
        study = optuna.create_study(storage=open_storage(own_pg_url), study_name=unique_name("stopped"))
        show = "SHOW idle_in_transaction_session_timeout"
        with study._storage._backend.engine.connect() as conn:
            assert conn.exec_driver_sql(show).scalar() == "2s"
        with get_engine(own_pg_url).connect() as conn:  # not the service's: a comparison's step computes in one
            assert conn.exec_driver_sql(show).scalar() == "0"
        first = Lease(study, ttl_s=0.4, driver="worker-a")
        first.acquire()
        with first.fenced_writes():
            trial = study.ask()
        first._stop.set()  # the driver stops: its renewals first (they would wait on the row lock below too)
        first._thread.join()
        with first.fenced_writes():
            # then a write that proved the lease and wrote its attr, stopped before its commit
            backend = study._storage._backend
            backend._prove_lease()
            session = backend.scoped_session()
            backend._set_trial_attr_without_commit(session, TrialUserAttributeModel, trial._trial_id, "told_by", "a")
            session.flush()
        stopped_at = time.monotonic()
        time.sleep(0.6)  # the lease is stale: 0.4 s without a renewal

        other = RetryingRDBStorage(own_pg_url, engine_kwargs=engine_kwargs(own_pg_url, idle_in_transaction=True))
        other.retry_s = 20.0  # (without the timeout the take-over waits for the lock until this ends, and fails)
        second = Lease(optuna.load_study(study_name=study.study_name, storage=other), ttl_s=0.4, driver="worker-b")
        second.acquire()
        waited = time.monotonic() - stopped_at
        # it waited for the stopped transaction (the row was locked until PostgreSQL ended it, 2 s after the write
        # went idle), and no longer than that allows (plus a retry's back-off: a try that meets the lock ends at the
        # 4 s statement_timeout, or at once when the lock goes)
        assert 1.8 < waited < 2 + 4 + 2, waited
        with first.fenced_writes():  # resumed: its connection was ended; the retry proves the lease, and fails
            with pytest.raises(FencedError):
                study.tell(trial, 0.9)
        stored = other.get_trial(trial._trial_id)
        assert stored.state == optuna.trial.TrialState.RUNNING and "told_by" not in stored.user_attrs
        second.release()
    finally:
        get_settings.cache_clear()
        close_storage(own_pg_url)
        if other is not None:
            other.engine.dispose()
