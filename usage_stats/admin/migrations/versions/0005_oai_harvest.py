"""OAI-PMH harvesting: the sets a source is harvested by, and each source's harvest status.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: an existing source is harvested whole (no sets) until an operator says otherwise.
    op.add_column("source", sa.Column("oai_sets", sa.Text()))
    op.create_table(
        "harvest_status",
        sa.Column("source_key", sa.String(100), primary_key=True),
        # The OAI responseDate of the last completed harvest, as the source wrote it: the next
        # harvest's `from`. Text, so the source's own granularity survives every DB.
        sa.Column("last_response_date", sa.String(32)),
        sa.Column("last_completed_at", sa.DateTime(timezone=True)),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.String(10), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("formats", sa.Text()),
        sa.Column("records_seen", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("records_added", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("records_updated", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("records_deleted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("records_with_problems", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("records_total", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("last_status IN ('ok', 'failed')", name="ck_harvest_status_status"),
    )


def downgrade() -> None:
    op.drop_table("harvest_status")
    # Batch mode: SQLite drops a column by copying the table (its CHECK constraints included).
    with op.batch_alter_table("source") as batch:
        batch.drop_column("oai_sets")
