"""The comparisons table, and each study's link to its comparison (arm, batch size, role).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


def upgrade() -> None:
    op.create_table(
        "tvlars_comparisons",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("owner", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN {STATES}", name=op.f("ck_tvlars_comparisons_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tvlars_comparisons")),
        sa.UniqueConstraint("name", name=op.f("uq_tvlars_comparisons_name")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tvlars_comparisons_idempotency_key")),
    )
    op.add_column("tvlars_studies", sa.Column("comparison_id", sa.String(32), nullable=True))
    op.add_column("tvlars_studies", sa.Column("arm", sa.String(32), nullable=True))
    op.add_column("tvlars_studies", sa.Column("batch_size", sa.Integer(), nullable=True))
    op.add_column("tvlars_studies", sa.Column("role", sa.String(8), nullable=True))
    op.create_index(op.f("ix_tvlars_studies_comparison_id"), "tvlars_studies", ["comparison_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tvlars_studies_comparison_id"), table_name="tvlars_studies")
    with op.batch_alter_table("tvlars_studies") as batch:
        for column in ("role", "batch_size", "arm", "comparison_id"):
            batch.drop_column(column)
    op.drop_table("tvlars_comparisons")
