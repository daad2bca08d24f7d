"""Shared fixtures: a fresh PostgreSQL database, SQLite files, and one Ray cluster for the whole test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
# The tests kill trials mid-way and check that they continue from their last epoch: a checkpoint after every epoch
# (the service's default saves one per 10 s of a trial; tests/unit/service/test_storage_writes.py tests that).
os.environ.setdefault("TVLARS_CHECKPOINT_INTERVAL_S", "0")
#: Fixtures that make a test part of the real-process tier (PostgreSQL, Ray, a uvicorn server).
INTEGRATION_FIXTURES = {"pg_url", "own_pg_url", "ray_address", "server", "idle_server"}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark ``integration`` every test that needs PostgreSQL, Ray or a real server (``make test-fast`` skips them);
    skip the ``cuda`` tests where there is no CUDA GPU."""
    if any(item.get_closest_marker("cuda") for item in items):
        import torch

        if not torch.cuda.is_available():
            no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
            for item in items:
                if item.get_closest_marker("cuda"):
                    item.add_marker(no_gpu)
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("storage_url") == "postgresql"
        if names & INTEGRATION_FIXTURES or on_pg:
            item.add_marker(pytest.mark.integration)


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
