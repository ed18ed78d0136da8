"""Routes of the history list and its CSV export."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.orm import defer

from webapp.extensions import db
from webapp.filters import iso
from webapp.history.query import SORTS, Filters
from webapp.models import LABELS, BundleRecord, Prediction, SliceResult
from webapp.render import render

bp = Blueprint("history", __name__, url_prefix="/history")

CSV_COLUMNS = (
    "id", "created_at", "kind", "name", "slices", "score", "label", "operating_point",
    "threshold", "uncertain", "aggregation", "bundle_name", "bundle_id", "app_version",
    "content_sha256", "review", "true_label", "note",
)  # fmt: skip


@bp.get("")
def listing() -> str:
    """Stored results, filtered, sorted and paged; `results` is the HTMX fragment."""
    filters = Filters.from_args(request.args)
    page = db.paginate(
        filters.query().options(defer(Prediction.preprocessing)),  # not shown in the list
        per_page=current_app.config["HISTORY_PAGE_SIZE"],
        error_out=False,
    )
    ids = [p.id for p in page.items]
    counts = db.session.execute(  # slice counts in one query, without loading the slices
        select(SliceResult.prediction_id, func.count())
        .where(SliceResult.prediction_id.in_(ids))
        .group_by(SliceResult.prediction_id)
    )
    bundles = db.session.scalars(db.select(BundleRecord).order_by(BundleRecord.name)).all()
    return render(
        "history/list.html",
        "results",
        page=page,
        filters=filters,
        sorts=SORTS,
        labels=LABELS,
        bundles=bundles,
        deleted=request.args.get("deleted", type=int),
        slice_counts=dict(counts.all()),
    )


@bp.get("/export.csv")
def export_csv() -> ResponseReturnValue:
    """The filtered list (every page) as CSV."""
    filters = Filters.from_args(request.args)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for p in db.session.scalars(filters.query()):
        writer.writerow([_cell(value) for value in _row(p)])
    headers = {"Content-Disposition": "attachment; filename=ctstroke-history.csv"}
    return buffer.getvalue(), 200, {"Content-Type": "text/csv; charset=utf-8", **headers}


def _row(p: Prediction) -> list[object]:
    return [
        p.id, iso(p.created_at), p.kind, p.name, len(p.slices), f"{p.score:.6f}",
        p.label, p.operating_point, f"{p.threshold:.6f}", p.uncertain, p.aggregation or "",
        p.bundle_name, p.bundle_id, p.app_version, p.content_sha256, p.review or "",
        p.true_label or "", p.note,
    ]  # fmt: skip


def _cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
