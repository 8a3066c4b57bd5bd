"""The `robot_distributed` rule's mode per source: on, report (audited only) or off.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing sources get the rule on, as new ones do.
    op.add_column(
        "source",
        sa.Column("distributed_robots", sa.String(10), nullable=False, server_default="on"),
    )


def downgrade() -> None:
    with op.batch_alter_table("source") as batch:
        batch.drop_column("distributed_robots")
