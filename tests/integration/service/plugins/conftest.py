"""The server of the plugin tests: the example plugin installed in this venv before it starts."""

from __future__ import annotations

import pytest

from service.testing.server import start_server


@pytest.fixture(scope="session")
def server(example_plugin, pg_url, ray_address, tmp_path_factory):
    """`tvlars-tune serve` (uvicorn + one worker) on PostgreSQL and the session's Ray, the example plugin installed."""
    srv = start_server(pg_url, tmp_path_factory.mktemp("server"), workers=1)
    yield srv
    srv.stop()
