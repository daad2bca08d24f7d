"""The migrations test of tests/unit/service/test_migrations.py, on PostgreSQL (the unit tier runs it on SQLite)."""

from __future__ import annotations

import pytest

from tests.unit.service.test_migrations import (  # noqa: F401 (collected here, on PostgreSQL)
    test_migrations_match_models_and_leave_optunas_version_table_alone,
)

pytestmark = pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
