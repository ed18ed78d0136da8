"""operating points saved by the deployment, and API tokens (stored hashed).

Revision ID: 0003_points_tokens
Revises: 0002_predictions
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_points_tokens"
down_revision = "0002_predictions"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("jobs", sa.Column("options", sa.JSON(), nullable=True))
    op.create_table(
        "operating_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bundle_id", sa.String(length=16), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("policy", sa.String(length=30), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("half_width", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["bundle_id"], ["bundles.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("bundle_id", "level", "name"),
    )
    op.create_index("ix_operating_points_bundle_id", "operating_points", ["bundle_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )


def downgrade():
    op.drop_table("api_tokens")
    op.drop_index("ix_operating_points_bundle_id", table_name="operating_points")
    op.drop_table("operating_points")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("options")
