"""A comparison's failed attempts to advance, and when the next attempt is due (the back-off).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tvlars_comparisons", sa.Column("advance_failures", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("tvlars_comparisons", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tvlars_comparisons") as batch:
        for column in ("retry_at", "advance_failures"):
            batch.drop_column(column)
