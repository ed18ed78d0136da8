"""jobs.updated_at: a job's last sign of life, read by `flask jobs reap`.

Revision ID: 0006_job_heartbeat
Revises: 0005_users
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_job_heartbeat"
down_revision = "0005_users"
branch_labels = None
depends_on = None


def upgrade():
    # Nullable: SQLite cannot add a NOT NULL column without rebuilding the table, and rebuilding
    # "jobs" would run ON DELETE SET NULL on every prediction's job_id. Older jobs get created_at.
    op.add_column("jobs", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET updated_at = created_at")
    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at"])


def downgrade():
    op.drop_index("ix_jobs_updated_at", table_name="jobs")
    # A plain DROP COLUMN (SQLite 3.35+), not a batch rebuild: with foreign keys on, dropping the
    # old "jobs" table would set every prediction's job_id to NULL.
    op.drop_column("jobs", "updated_at")
