"""Routes of the model pages."""

from __future__ import annotations

from flask import Blueprint, render_template

from ml import Bundle, OperatingPoint, read_thresholds
from webapp.bundles.store import active_bundle, get_bundle_or_404
from webapp.extensions import db
from webapp.models import BundleRecord

bp = Blueprint("bundles", __name__)


@bp.get("/model")
def index() -> str:
    """The active bundle's model card, or why no bundle is loaded."""
    bundle, problem = active_bundle()
    card = bundle.card() if bundle else None
    return render_template(
        "bundles/card.html", card=card, problem=problem, active=True, points=_points(bundle)
    )


@bp.get("/models")
def listing() -> str:
    """Bundles registered in this deployment's database."""
    records = db.session.scalars(db.select(BundleRecord).order_by(BundleRecord.registered_at))
    bundle, _ = active_bundle()
    return render_template(
        "bundles/list.html", records=list(records), active_id=bundle.id if bundle else None
    )


@bp.get("/models/<bundle_id>")
def detail(bundle_id: str) -> str:
    """The model card of one installed bundle."""
    bundle = get_bundle_or_404(bundle_id)
    active, _ = active_bundle()
    is_active = active is not None and active.id == bundle.id
    return render_template(
        "bundles/card.html",
        card=bundle.card(),
        problem=None,
        active=is_active,
        points=_points(bundle),
    )


def _points(bundle: Bundle | None) -> dict[str, tuple[list[OperatingPoint], str]]:
    """The stored operating points per level (slice, patient), each with the active one's name."""
    if bundle is None:
        return {}
    files = {"slice": "thresholds.json", "patient": "patient_thresholds.json"}
    return {
        level: read_thresholds(bundle.path / name)
        for level, name in files.items()
        if (bundle.path / name).exists()
    }
