"""bundles: the model bundles a deployment has registered.

Revision ID: 0001_bundles
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_bundles"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "bundles",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("backbone", sa.String(length=200), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("bundles")
