"""The tiers, and the fixtures both share: a fresh PostgreSQL database, SQLite files, one Ray cluster for the whole
test session, the example plugins installed.

tests/unit/ holds what needs no PostgreSQL, Ray or real server (``make test-fast``; tests/unit/conftest.py checks that
no unit test leaves Ray running); tests/integration/ the rest. The integration fixtures are defined here and refused
below tests/unit at collection."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
# The tests kill trials mid-way and check that they continue from their last epoch: a checkpoint after every epoch
# (the service's default saves one per 10 s of a trial; tests/unit/service/test_trial_writes.py tests that).
os.environ.setdefault("TVLARS_CHECKPOINT_INTERVAL_S", "0")
#: Fixtures of the real-process tier (PostgreSQL, Ray, a uvicorn server): only tests under tests/integration use them.
INTEGRATION_FIXTURES = {"pg_url", "own_pg_url", "private_pg", "ray_address", "server", "idle_server"}
TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"
INTEGRATION = TESTS / "integration"
#: Under pytest-xdist (``make test``: ``-n 3 --dist loadgroup``, scheduled by :func:`pytest_xdist_make_scheduler`)
#: the integration tier runs as two groups, each in one worker process with session fixtures of its own (the unit
#: tier spreads over every worker): the tests that start processes and databases of their own (a private PostgreSQL
#: they stop, workers they kill or pause, the soak), and the rest, on the session's server and Ray. Most of either
#: group's time is spent waiting on other processes, so the two overlap well on two cores.
OWN_PROCESSES = {
    "test_cancels.py",
    "test_faults.py",
    "test_fencing.py",
    "test_private_pg.py",
    "test_soak.py",
    "test_worker.py",
    "test_worker_checkpoints.py",
}


def xdist_scope(nodeid: str) -> str:
    """The unit of work a pytest-xdist worker takes whole: one of the integration tier's two groups
    (:data:`OWN_PROCESSES`), else the test alone."""
    path = nodeid.split("::", 1)[0]
    if not path.startswith("tests/integration/"):
        return nodeid
    return "integration-own-processes" if Path(path).name in OWN_PROCESSES else "integration-shared"


@pytest.hookimpl(optionalhook=True)  # (a hook of pytest-xdist, a dev dependency)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` groups by :func:`xdist_scope`, largest group first (xdist's own ``xdist_group`` marks
    do not reach its scheduler under pytest 9, which no longer reads the ``_nodeid`` they rewrite)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    config.option.loadscopereorder = True  # the largest scopes (the two groups) are handed out first
    return TierScheduling(config, log)


def _directly_parametrized(item) -> set[str]:
    """The argument names ``item`` gets from ``@pytest.mark.parametrize`` without a fixture (``indirect`` off): such a
    name shadows any fixture of that name (tests/unit/service/api/test_doors.py parametrizes an ASGI ``server``)."""
    names: set[str] = set()
    for mark in item.iter_markers("parametrize"):
        argnames = mark.args[0] if mark.args else mark.kwargs["argnames"]
        if isinstance(argnames, str):
            argnames = [a.strip() for a in argnames.split(",") if a.strip()]
        indirect = mark.kwargs.get("indirect", False)
        names |= set(argnames) - (set(argnames) if indirect is True else set(indirect or ()))
    return names


def _integration_needs(item) -> list[str]:
    """What makes ``item`` a real-process test: the integration fixtures it requests (directly or through other
    fixtures), a run on PostgreSQL (``storage_url``'s ``postgresql`` parameter), an explicit ``integration`` mark."""
    names = set(getattr(item, "fixturenames", ())) - _directly_parametrized(item)
    needs = [f"fixture {name!r}" for name in sorted(names & INTEGRATION_FIXTURES)]
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("storage_url") == "postgresql":
        needs.append("storage_url[postgresql]")
    if item.get_closest_marker("integration"):
        needs.append("mark 'integration'")
    return needs


def pytest_collection_modifyitems(config, items) -> None:
    """The tier follows the folder: mark ``integration`` every test under tests/integration (``-m`` selections keep
    working); refuse a test under tests/unit that needs PostgreSQL, Ray or a real server, and a test file in tests/
    outside both tiers. Skip the ``cuda`` tests where there is no CUDA GPU."""
    if any(item.get_closest_marker("cuda") for item in items):
        import torch

        if not torch.cuda.is_available():
            no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
            for item in items:
                if item.get_closest_marker("cuda"):
                    item.add_marker(no_gpu)
    misplaced = []
    for item in items:
        path = Path(item.path).resolve()
        if INTEGRATION in path.parents:
            item.add_marker(pytest.mark.integration)
        elif UNIT in path.parents:
            needs = _integration_needs(item)
            if needs:
                misplaced.append(f"{item.nodeid} needs {', '.join(needs)}: it belongs under tests/integration/")
        elif TESTS in path.parents:
            misplaced.append(f"{item.nodeid}: a test goes under tests/unit/ or tests/integration/")
    if misplaced:
        raise pytest.UsageError(
            "Tests out of place (tests/unit: no PostgreSQL, Ray or real server; tests/integration: the rest):\n  "
            + "\n  ".join(misplaced)
        )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session (created, then dropped at the end)."""
    base = make_url(os.environ.get("TVLARS_TEST_DATABASE_URL", DEFAULT_PG))
    name = f"tvlars_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL at {base.render_as_string()} is not reachable: {e}")
    url = base.set(database=name).render_as_string(hide_password=False)
    yield url
    from service.core.db import dispose

    dispose(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def own_pg_url(pg_url) -> Iterator[str]:
    """A PostgreSQL database of this test's own, migrated: for tests that claim studies by hand, which the session's
    ``server`` worker (on ``pg_url``, woken at once by NOTIFY) would otherwise race for."""
    from service.core.db import dispose, migrate

    base = make_url(pg_url)
    name = f"{base.database}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    dispose(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path) -> str:
    """Each engine test runs on both storages the service supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """One local Ray for the whole session (starting Ray takes seconds); subprocesses join it via RAY_ADDRESS."""
    import ray

    os.environ.setdefault("TVLARS_LEASE_TTL_S", "10")
    # idle warm trial runners hold CPUs of this shared Ray: released after 1 s, not 10 (servers inherit it)
    os.environ.setdefault("TVLARS_RUNNER_IDLE_S", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    os.environ["RAY_ADDRESS"] = address
    yield address
    ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:  # noqa: F821 (imported below: only sessions that use it pay)
    """A PostgreSQL server of this session's own (initdb on a free loopback port) that tests may stop and restart.

    Tests that stop it must leave it running (``private_pg.start()`` in a ``finally``); it is removed at the end.
    """
    from service.testing.pg import PrivatePostgres, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"private PostgreSQL: {reason}")
    with PrivatePostgres() as pg:
        yield pg


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def example_plugin() -> None:
    """The example plugins (workloads, optimizer) installed in this venv, as ``make install`` leaves them."""
    from tests.utils.plugins import ensure_example_plugin

    ensure_example_plugin()
