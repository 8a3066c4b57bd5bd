"""Handle and DOI prefixes a repository declares, to own its items in those spellings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing sources declare none until an operator says otherwise.
    op.add_column("source", sa.Column("handle_prefixes", sa.Text()))
    op.add_column("source", sa.Column("doi_prefixes", sa.Text()))


def downgrade() -> None:
    # Batch mode: SQLite drops a column by copying the table (its CHECK constraints included).
    with op.batch_alter_table("source") as batch:
        batch.drop_column("doi_prefixes")
        batch.drop_column("handle_prefixes")
