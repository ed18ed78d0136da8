"""Result ids are never reused; every result has a public id and a version.

SQLite hands the id of a deleted newest row to the next insert unless the table is declared
AUTOINCREMENT, so a page left open on a deleted result could act on another patient's new
result under the same number. The table is rebuilt with AUTOINCREMENT and its counter starts
above every id it ever gave, including deleted ones the audit log names. PostgreSQL's sequence
never goes back; its counter is raised the same way, for databases restored from a dump.

`public_id` (random) names a result on its pages and in the audit log; `version` (SQLAlchemy's
version counter) lets a form that edits a result say which state of it the reader saw.

Revision ID: 0008_record_integrity
Revises: 0007_history_search
Create Date: 2026-12-01
"""

import re
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0008_record_integrity"
down_revision = "0007_history_search"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade():
    bind = op.get_bind()
    op.add_column("predictions", sa.Column("public_id", sa.String(length=32), nullable=True))
    op.add_column(
        "predictions", sa.Column("version", sa.Integer(), nullable=False, server_default="1")
    )
    _fill_public_ids(bind)
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite_with_autoincrement()
    else:
        op.alter_column("predictions", "public_id", nullable=False)
    op.create_index("ix_predictions_public_id", "predictions", ["public_id"], unique=True)
    _raise_id_counter(bind)


def downgrade():
    op.drop_index("ix_predictions_public_id", table_name="predictions")
    # Plain DROP COLUMN (SQLite 3.35+): no rebuild, so no cascade onto the slices.
    op.drop_column("predictions", "version")
    op.drop_column("predictions", "public_id")


def _fill_public_ids(connection) -> None:
    ids = [row[0] for row in connection.execute(sa.text("SELECT id FROM predictions"))]
    update = sa.text("UPDATE predictions SET public_id = :public_id WHERE id = :id")
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        connection.execute(update, [{"id": i, "public_id": uuid.uuid4().hex} for i in batch])


def _rebuild_sqlite_with_autoincrement() -> None:
    """Rebuild "predictions" as AUTOINCREMENT, keeping every slice row.

    Dropping the old table runs ON DELETE CASCADE on prediction_slices (foreign keys are on,
    and the pragma cannot change inside the migration's transaction), so the slices are kept
    aside and put back once the new table has taken the old one's name.
    """
    op.execute("CREATE TEMP TABLE kept_slices AS SELECT * FROM prediction_slices")
    with op.batch_alter_table(
        "predictions", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.alter_column("public_id", existing_type=sa.String(length=32), nullable=False)
    op.execute("DELETE FROM prediction_slices")  # empty already, unless the cascade did not run
    op.execute("INSERT INTO prediction_slices SELECT * FROM kept_slices")
    op.execute("DROP TABLE kept_slices")


def _raise_id_counter(connection) -> None:
    """Start the id counter above every id in the table and every one the audit log names."""
    highest = connection.execute(sa.text("SELECT MAX(id) FROM predictions")).scalar() or 0
    targets = connection.execute(
        sa.text("SELECT target FROM audit_events WHERE target LIKE 'prediction %'")
    )
    for (target,) in targets:
        found = re.fullmatch(r"prediction (\d+)", target or "")
        if found:
            highest = max(highest, int(found.group(1)))
    if highest == 0:
        return
    if connection.dialect.name == "sqlite":
        connection.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'predictions'"))
        connection.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('predictions', :seq)"),
            {"seq": highest},
        )
    elif connection.dialect.name == "postgresql":
        sequence = connection.execute(
            sa.text("SELECT pg_get_serial_sequence('predictions', 'id')")
        ).scalar()
        current = connection.execute(sa.text(f"SELECT last_value FROM {sequence}")).scalar()
        connection.execute(
            sa.text("SELECT setval(:sequence, :value)"),
            {"sequence": sequence, "value": max(highest, current)},
        )
