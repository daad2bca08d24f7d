"""Alembic environment for tvlars-tune's own tables (Optuna's tables and version table are not ours)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from service.core.db import VERSION_TABLE
from service.models import Base

config = context.config


def _include(obj, name, type_, reflected, compare_to) -> bool:
    return type_ != "table" or name.startswith("tvlars_")


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # `alembic` on the command line: connect from the configured URL
        engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=_include,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
