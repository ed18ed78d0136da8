"""Routes of the model pages."""

from __future__ import annotations

from flask import Blueprint, render_template

from ml import Bundle, OperatingPoint, label_lines
from webapp.bundles.points import FILES, bundle_points
from webapp.bundles.store import (
    active_bundle,
    get_bundle_or_404,
    known_records,
    registered_bundle,
    running,
)

bp = Blueprint("bundles", __name__)


@bp.get("/model")
def index() -> str:
    """The active bundle's model card, or why no bundle is loaded."""
    bundle, problem = active_bundle()
    return render_template(
        "bundles/card.html",
        card=bundle.card() if bundle else None,
        problem=problem,
        active=True,
        points=_points(bundle),
        figures=bundle.point_figures() if bundle else {},
        label_notes=_label_notes(bundle),
        running=running() if bundle else None,
    )


@bp.get("/models")
def listing() -> str:
    """Bundles registered in this deployment's database, with their headline figures."""
    bundle, _ = active_bundle()
    rows = [(record, registered_bundle(record)) for record in known_records()]
    return render_template("bundles/list.html", rows=rows, active_id=bundle.id if bundle else None)


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
        figures=bundle.point_figures(),
        label_notes=_label_notes(bundle),
        running=running() if is_active else None,
    )


def _points(bundle: Bundle | None) -> dict[str, tuple[list[OperatingPoint], str]]:
    """The stored operating points per level (slice, patient), each with the active one's name."""
    if bundle is None:
        return {}
    return {
        level: bundle_points(bundle, level)
        for level, name in FILES.items()
        if (bundle.path / name).exists()
    }


def _label_notes(bundle: Bundle | None) -> list[str]:
    """The card's lines on labels, heat maps against lesion masks and the patient score, as
    the bundle's model_card.md words them (list markers dropped)."""
    if bundle is None:
        return []
    return [line.strip().removeprefix("- ") for line in label_lines(bundle.metrics)]
