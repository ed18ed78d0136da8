"""What a result must say about itself: whether its model knows real CT, whether its input
looked like a head CT.

`bundles.synthetic_only`: the bundle was trained on synthetic phantoms only (`Bundle.synthetic_only`);
NULL for bundles registered before it was recorded, filled when the bundle is next registered
(the next prediction with it, or `flask bundles sync`). `prediction_slices.input_warning`: why
the slice did not look like an axial head CT (NULL: it did, or it was stored before the check).

Revision ID: 0009_caveats
Revises: 0008_record_integrity
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_caveats"
down_revision = "0008_record_integrity"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN (nullable), never a batch rebuild: rebuilding "bundles" or the slice table
    # on SQLite would run the cascades of their foreign keys.
    op.add_column("bundles", sa.Column("synthetic_only", sa.Boolean(), nullable=True))
    op.add_column("prediction_slices", sa.Column("input_warning", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("prediction_slices", "input_warning")
    op.drop_column("bundles", "synthetic_only")
