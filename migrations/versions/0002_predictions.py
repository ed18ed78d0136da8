"""predictions: uploads being predicted (jobs), results with provenance, and their slices.

Revision ID: 0002_predictions
Revises: 0001_bundles
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_predictions"
down_revision = "0001_bundles"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("bundle_id", sa.String(length=16), nullable=False),
        sa.Column("bundle_name", sa.String(length=200), nullable=False),
        sa.Column("operating_point", sa.String(length=100), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("preprocessing", sa.JSON(), nullable=False),
        sa.Column("app_version", sa.String(length=40), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("label", sa.String(length=10), nullable=False),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("uncertain_reasons", sa.JSON(), nullable=False),
        sa.Column("aggregation", sa.String(length=20), nullable=True),
        sa.Column("order_by", sa.String(length=20), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("review", sa.String(length=10), nullable=True),
        sa.Column("true_label", sa.String(length=10), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["bundle_id"], ["bundles.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_content_sha256", "predictions", ["content_sha256"])
    op.create_index("ix_predictions_bundle_id", "predictions", ["bundle_id"])
    op.create_index("ix_predictions_label", "predictions", ["label"])
    op.create_table(
        "prediction_slices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("original_name", sa.String(length=300), nullable=False),
        sa.Column("stored_name", sa.String(length=80), nullable=False),
        sa.Column("file_format", sa.String(length=10), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("fold_probabilities", sa.JSON(), nullable=False),
        sa.Column("fold_std", sa.Float(), nullable=False),
        sa.Column("view_std", sa.Float(), nullable=False),
        sa.Column("label", sa.String(length=10), nullable=False),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("uncertain_reasons", sa.JSON(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("faithfulness", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_prediction_slices_prediction_id", "prediction_slices", ["prediction_id"]
    )


def downgrade():
    op.drop_index("ix_prediction_slices_prediction_id", table_name="prediction_slices")
    op.drop_table("prediction_slices")
    for name in ("label", "bundle_id", "content_sha256", "created_at"):
        op.drop_index(f"ix_predictions_{name}", table_name="predictions")
    op.drop_table("predictions")
    op.drop_table("jobs")
