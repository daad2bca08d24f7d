from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from service.core.db import dispose
from service.testing.server import start_server


@pytest.fixture(scope="session")
def server(pg_url, ray_address, tmp_path_factory):
    """`tvlars-tune serve` (uvicorn + one worker) on PostgreSQL, joining the session's Ray cluster."""
    srv = start_server(pg_url, tmp_path_factory.mktemp("server"), workers=1)
    yield srv
    srv.stop()


@pytest.fixture
def fault_db(private_pg) -> Iterator[str]:
    """A fresh database on the private server (each test its own)."""
    name = f"faults_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(private_pg.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(private_pg.url).set(database=name).render_as_string(hide_password=False)
    yield url
    if not private_pg.accepts_connections():
        private_pg.start()
    dispose(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def outage(private_pg):
    """``with outage():`` stops the private PostgreSQL (fast shutdown: sessions cut) and always starts it again."""

    @contextmanager
    def down() -> Iterator[None]:
        private_pg.stop("fast")
        try:
            yield
        finally:
            private_pg.start()

    return down
