"""Sources and countries.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "country",
        sa.Column("code", sa.String(2), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("national_site_id", sa.Integer()),
    )
    op.create_table(
        "source",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source_key", sa.String(100), nullable=False, unique=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("url", sa.String(1000)),
        sa.Column("institution", sa.String(255)),
        sa.Column("type", sa.String(1), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False, unique=True),
        sa.Column("national_site_id", sa.Integer()),
        sa.Column("regional_site_id", sa.Integer()),
        sa.Column("country", sa.String(2)),
        sa.Column("identifier_prefix", sa.String(255)),
        sa.Column("identifier_rule", sa.String(20), nullable=False, server_default="standard"),
        sa.Column("rule_pattern", sa.Text()),
        sa.Column("rule_replacement", sa.Text()),
        sa.Column("mapping_file", sa.String(1000)),
        sa.Column("custom_var_slot", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("oai_base_url", sa.String(1000)),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint("type IN ('R', 'N', 'L')", name="ck_source_type"),
        sa.CheckConstraint(
            "identifier_rule IN ('standard', 'regex', 'mapping')", name="ck_source_identifier_rule"
        ),
        sa.CheckConstraint("custom_var_slot BETWEEN 1 AND 10", name="ck_source_custom_var_slot"),
    )


def downgrade() -> None:
    op.drop_table("source")
    op.drop_table("country")
