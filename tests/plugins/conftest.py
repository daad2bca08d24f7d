"""Plugins installed for real: the example into this venv, the fixture distributions into a folder of their own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.testing.server import start_server

from ..utils.plugins import FIXTURE_PACKAGES, ensure_example_plugin, pip_install

# the fixture distributions' sources are installed, never imported from here (one fails at import on purpose)
collect_ignore_glob = ["packages/*"]


@pytest.fixture(scope="session")
def example_plugin() -> None:
    ensure_example_plugin()


@pytest.fixture(scope="session")
def fixture_plugins(tmp_path_factory) -> Path:
    """A ``--target`` folder holding tvlars-test-broken, -clash-a and -clash-b (copied first: builds write files)."""
    sources = tmp_path_factory.mktemp("plugin-sources")
    copies = [shutil.copytree(p, sources / p.name) for p in sorted(FIXTURE_PACKAGES.iterdir()) if p.is_dir()]
    target = tmp_path_factory.mktemp("plugins")
    pip_install(*copies, target=target)
    return target


@pytest.fixture(scope="session")
def server(example_plugin, pg_url, ray_address, tmp_path_factory):
    """`tvlars-tune serve` (uvicorn + one worker) on PostgreSQL and the session's Ray, the example plugin installed."""
    srv = start_server(pg_url, tmp_path_factory.mktemp("server"), workers=1)
    yield srv
    srv.stop()
