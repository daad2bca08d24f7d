"""The unit tier (``make test-fast``): no PostgreSQL, Ray or real server. tests/conftest.py refuses a test here that
requests one; the check below fails a test that leaves Ray running in this process."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(params=["sqlite"])
def storage_url(tmp_path) -> str:
    """SQLite only in this tier: a test's run on PostgreSQL is collected under tests/integration (as
    tests/integration/service/test_migrations.py does)."""
    return f"sqlite:///{tmp_path / 'studies.db'}"


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def ray_never_started(request) -> Iterator[None]:
    """Fails the test that started Ray in this process (importing Ray is fine: starting it is not). In `make test`
    the integration tier's session Ray may already be up when the unit tests run: a test is blamed only for a Ray
    it started."""
    running_before = _ray_running()
    yield
    if not running_before and _ray_running():
        import ray

        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} left Ray running: a test that needs Ray goes under tests/integration/")
