"""The private PostgreSQL the fault tests stop and start: it answers SQL, a stopped server fails connections fast,
and a restarted one keeps its data (a fast stop and an immediate one, which recovers like after a crash)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tests.conftest import unique_name


def connect(url: str) -> sa.Engine:
    return sa.create_engine(url, connect_args={"connect_timeout": 5}, poolclass=sa.pool.NullPool)


def test_private_pg_answers_sql_on_its_own_port(private_pg):
    assert private_pg.is_running() and private_pg.accepts_connections()
    assert private_pg.url == f"postgresql+psycopg://postgres@127.0.0.1:{private_pg.port}/postgres"
    assert private_pg.port != 5432, "must not be the shared server"
    engine = connect(private_pg.url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1 + 1")).scalar_one() == 2
        data_dir = conn.execute(sa.text("SHOW data_directory")).scalar_one()
        listen = conn.execute(sa.text("SHOW listen_addresses")).scalar_one()
    assert data_dir == str(private_pg.data)
    assert listen == "127.0.0.1"


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_stop_fails_connections_fast_and_start_keeps_the_data(private_pg, mode):
    table = unique_name("kept").replace("-", "_")
    engine = connect(private_pg.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (v int)"))
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (1), (2), (3)"))
    try:
        private_pg.stop(mode=mode)
        assert not private_pg.is_running() and not private_pg.accepts_connections()
        t = time.monotonic()
        with pytest.raises(sa.exc.OperationalError):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        assert time.monotonic() - t < 2, "a stopped server must refuse at once, not hang"
    finally:
        private_pg.start()
    assert private_pg.is_running()
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT sum(v) FROM {table}")).scalar_one() == 6
    engine.dispose()


def test_close_removes_everything():
    from service.testing.pg import PrivatePostgres, unavailable_reason

    if unavailable_reason():
        pytest.skip(f"private PostgreSQL: {unavailable_reason()}")
    with PrivatePostgres() as pg:
        root, port = pg.root, pg.port
        assert pg.accepts_connections()
    assert not root.exists()
    assert not pg.accepts_connections(), f"a server still listens on {port}"
