"""Routes of /api/v1/models: bundles, their OOF metrics at any threshold, operating points.

A nested blueprint of `api`, so its error handlers and CSRF exemption apply here too.
"""

from __future__ import annotations

from flask import Blueprint, g, request, url_for
from flask.typing import ResponseReturnValue

from ml import metrics_at
from webapp.api import serialise
from webapp.api.auth import require
from webapp.api.params import ApiError, json_body, level_of, number, optional_number
from webapp.bundles import points
from webapp.bundles.store import active_bundle, get_bundle_or_404, known_records
from webapp.extensions import csrf

bp = Blueprint("models", __name__, url_prefix="/models")
csrf.exempt(bp)  # Flask-WTF checks the innermost blueprint only


@bp.get("")
@require("read")
def listing() -> ResponseReturnValue:
    """Bundles this deployment knows, and which one is loaded."""
    active, _ = active_bundle()
    records = known_records()
    active_id = active.id if active else None
    items = [serialise.bundle_record(r, active_id) for r in records]
    return {"items": items, "active_id": active_id}


@bp.get("/<bundle_id>")
@require("read")
def detail(bundle_id: str) -> ResponseReturnValue:
    """A bundle's model card, OOF metrics and operating points per level."""
    bundle = get_bundle_or_404(bundle_id)
    card = bundle.card()
    active, _ = active_bundle()
    levels = [level for level, name in points.FILES.items() if (bundle.path / name).exists()]
    return {
        "id": bundle.id,
        "name": bundle.name,
        "active": active is not None and active.id == bundle.id,
        "metrics": card.pop("metrics"),
        "card": card,
        "operating_points": {level: serialise.level_points(bundle, level) for level in levels},
    }


@bp.get("/<bundle_id>/metrics")
@require("read")
def metrics(bundle_id: str) -> ResponseReturnValue:
    """Counts and rates (95% Wilson intervals) on the bundle's OOF data at a threshold."""
    bundle = get_bundle_or_404(bundle_id)
    level = request.args.get("level", "slice")
    threshold = number(request.args.get("threshold"), "threshold")
    prevalence = optional_number(request.args, "prevalence")
    scores = points.oof_scores(bundle, level)
    try:
        figures = metrics_at(scores, threshold, prevalence=prevalence)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return {
        "bundle_id": bundle.id,
        "level": level,
        "aggregation": scores.aggregation,
        "metrics": figures,
    }


@bp.post("/<bundle_id>/operating-points")
@require("write")
def save_point(bundle_id: str) -> ResponseReturnValue:
    """Save a named threshold for a level (optionally make it active); 201 with the record."""
    bundle, body = get_bundle_or_404(bundle_id), json_body()
    level, name = level_of(body), body.get("name")
    if not isinstance(name, str):
        raise ApiError(400, "name must be a string of 1 to 100 characters")
    activate = body.get("activate", False)
    if not isinstance(activate, bool):
        raise ApiError(400, f"activate must be true or false, got {activate!r}")
    threshold = number(body.get("threshold"), "threshold")
    if name.strip() in points.point_names(bundle, level):
        raise ApiError(409, f"a {level} operating point called {name.strip()!r} exists already")
    record = points.save_point(bundle, level, name, threshold, created_by=_who(), activate=activate)
    location = url_for(".detail", bundle_id=bundle.id)
    return serialise.point_record(record), 201, {"Location": location}


@bp.post("/<bundle_id>/operating-points/<name>/activate")
@require("write")
def activate_point(bundle_id: str, name: str) -> ResponseReturnValue:
    """Label new results with this point: a saved one, or one of the bundle's own."""
    bundle = get_bundle_or_404(bundle_id)
    level = level_of(json_body())
    record = next((r for r in points.saved_points(bundle, level) if r.name == name), None)
    if record is not None:
        points.activate_saved(record)
    elif name in points.point_names(bundle, level):
        points.adopt_bundle_point(bundle, level, name, created_by=_who())
    else:
        raise ApiError(404, points.unknown_point(bundle, level, name))
    now_active = next(r for r in points.saved_points(bundle, level) if r.name == name)
    return serialise.point_record(now_active)


@bp.delete("/<bundle_id>/operating-points/<name>")
@require("write")
def delete_point(bundle_id: str, name: str) -> ResponseReturnValue:
    """Delete a point this deployment saved (`?level=`); not the bundle's own, not the active."""
    bundle = get_bundle_or_404(bundle_id)
    points.delete_saved(bundle, level_of(request.args), name)
    return "", 204


def _who() -> str:
    return f"api token {g.api_token.id} ({g.api_token.name})"[:100]
