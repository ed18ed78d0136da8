"""predictions.search_text and ordered indexes for the history filters.

The search reads one case-folded column (name, note and slice file names; webapp.search) instead
of scanning every stored slice; label and uncertainty filters read their page, newest first,
from an index. Existing results get their search text here, in batches.

Revision ID: 0007_history_search
Revises: 0006_job_heartbeat
Create Date: 2026-11-27
"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0007_history_search"
down_revision = "0006_job_heartbeat"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade():
    # A plain ADD COLUMN with a default, not a batch rebuild of "predictions" (which would
    # cascade the deletion of every slice row on SQLite).
    op.add_column(
        "predictions", sa.Column("search_text", sa.Text(), nullable=False, server_default="")
    )
    _fill_search_text(op.get_bind())
    op.drop_index("ix_predictions_label", table_name="predictions")
    op.create_index("ix_predictions_label_created_at", "predictions", ["label", "created_at"])
    op.create_index(
        "ix_predictions_uncertain_created_at", "predictions", ["uncertain", "created_at"]
    )


def downgrade():
    op.drop_index("ix_predictions_uncertain_created_at", table_name="predictions")
    op.drop_index("ix_predictions_label_created_at", table_name="predictions")
    op.create_index("ix_predictions_label", "predictions", ["label"])
    op.drop_column("predictions", "search_text")


def _fill_search_text(connection) -> None:
    slice_names = defaultdict(list)
    rows = connection.execute(
        sa.text(
            "SELECT prediction_id, original_name FROM prediction_slices "
            "ORDER BY prediction_id, position"
        )
    )
    for prediction_id, name in rows:
        slice_names[prediction_id].append(name)
    update = sa.text("UPDATE predictions SET search_text = :text WHERE id = :id")
    results = connection.execute(sa.text("SELECT id, name, note FROM predictions")).all()
    for start in range(0, len(results), BATCH):
        batch = results[start : start + BATCH]
        connection.execute(
            update,
            [{"id": i, "text": _searchable(name, note, slice_names[i])} for i, name, note in batch],
        )


def _searchable(name: str, note: str, slice_names: list[str]) -> str:
    """webapp.search.searchable as it stood at this revision (a migration must not change
    with the application code)."""
    return "\n".join([name or "", note or "", *slice_names]).casefold()
