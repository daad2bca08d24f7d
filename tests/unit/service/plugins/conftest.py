"""Plugins installed for real: the fixture distributions into a folder of their own (the example into this venv:
``example_plugin`` in tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.utils.plugins import FIXTURE_PACKAGES, pip_install

# the fixture distributions' sources are installed, never imported from here (one fails at import on purpose)
collect_ignore_glob = ["packages/*"]


@pytest.fixture(scope="session")
def fixture_plugins(tmp_path_factory) -> Path:
    """A ``--target`` folder holding tvlars-test-broken, -clash-a and -clash-b (copied first: builds write files)."""
    sources = tmp_path_factory.mktemp("plugin-sources")
    copies = [shutil.copytree(p, sources / p.name) for p in sorted(FIXTURE_PACKAGES.iterdir()) if p.is_dir()]
    target = tmp_path_factory.mktemp("plugins")
    pip_install(*copies, target=target)
    return target
