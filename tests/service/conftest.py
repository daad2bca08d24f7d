from __future__ import annotations

import pytest

from ..utils.server import start_server


@pytest.fixture(scope="session")
def server(pg_url, ray_address, tmp_path_factory):
    """`tvlars-tune serve` (uvicorn + one worker) on PostgreSQL, joining the session's Ray cluster."""
    srv = start_server(pg_url, tmp_path_factory.mktemp("server"), workers=1)
    yield srv
    srv.stop()
