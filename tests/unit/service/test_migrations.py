"""The Alembic migrations build exactly the tables the models describe, in their own version table."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service._optuna import open_storage
from service.core.db import VERSION_TABLE, get_engine, migrate
from service.models import Base


def test_migrations_match_models_and_leave_optunas_version_table_alone(storage_url):
    open_storage(storage_url)  # Optuna's tables and its own alembic_version first, as in production
    migrate(storage_url)
    migrate(storage_url)  # idempotent
    engine = get_engine(storage_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "include_object": lambda obj, name, type_, *_: type_ != "table" or name.startswith("tvlars_"),
            },
        )
        assert compare_metadata(ctx, Base.metadata) == []
        assert ctx.get_current_revision() == "0005"
        tables = set(sa.inspect(conn).get_table_names())
    ours = {"tvlars_studies", "tvlars_workers", "tvlars_comparisons", "tvlars_secrets"}
    assert ours | {VERSION_TABLE, "alembic_version", "trials"} <= tables
