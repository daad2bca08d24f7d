"""A comparison study's tuning repeat and re-run rank as columns, and every study's epochs spent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tvlars_studies", sa.Column("repeat", sa.Integer(), nullable=True))
    op.add_column("tvlars_studies", sa.Column("rank", sa.Integer(), nullable=True))
    op.add_column("tvlars_studies", sa.Column("epochs_spent", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("tvlars_studies") as batch:
        for column in ("epochs_spent", "rank", "repeat"):
            batch.drop_column(column)
