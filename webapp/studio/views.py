"""Routes of the threshold studio."""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue

from ml import Bundle, OneClassSource, metrics_at, oof_sources
from webapp.auth.guard import current_user, permission
from webapp.bundles import points
from webapp.bundles.store import active_bundle, get_bundle_or_404
from webapp.extensions import db
from webapp.models import OperatingPointRecord
from webapp.render import render
from webapp.studio.data import holdout_report, studio_data

bp = Blueprint("studio", __name__, url_prefix="/studio")
# Said when a prevalence is refused, here and by the page's script (which reads it from the page).
PREVALENCE_RULE = "prevalence must be a number strictly between 0 and 1 (0.05 for 5%)"


@bp.get("")
def active() -> ResponseReturnValue:
    """The studio of the active bundle."""
    bundle, problem = active_bundle()
    if bundle is None:
        abort(503, description=problem)
    return redirect(url_for(".page", bundle_id=bundle.id, **request.args))


@bp.get("/<bundle_id>")
def page(bundle_id: str) -> ResponseReturnValue:
    """The slider, the plots and the table; the table alone also works without JavaScript."""
    bundle = get_bundle_or_404(bundle_id)
    level = _level()
    source = _source(bundle)
    active = points.active_point(bundle, level)
    threshold = _float_arg("threshold", active.point.threshold, 0.0, 1.0)
    prevalence, problem = _prevalence()
    scores = _scores(bundle, level, source)
    changed = db.session.scalars(points.would_change(bundle, level, threshold)).all()
    own, own_active = points.bundle_points(bundle, level)
    body = render(
        "studio/page.html",
        bundle=bundle,
        level=level,
        threshold=threshold,
        prevalence=prevalence,
        prevalence_typed=request.args.get("prevalence", ""),
        prevalence_problem=problem,
        prevalence_rule=PREVALENCE_RULE,
        figures=metrics_at(scores, threshold, prevalence=prevalence),
        active=active,
        own_points=own,
        own_active=own_active,
        saved=[r for r in points.saved_points(bundle, level) if r.policy == "saved"],
        changed_count=len(changed),
        holdout=holdout_report(bundle, level),
        aggregation=scores.aggregation,
        source=source,
        sources=oof_sources(bundle),
        one_class=_one_class_sources(bundle),
    )
    return body, 400 if problem else 200


@bp.get("/<bundle_id>/data.json")
def data(bundle_id: str) -> ResponseReturnValue:
    """OOF arrays, the figures at a threshold, points and stored results: the page redraws
    from these."""
    bundle = get_bundle_or_404(bundle_id)
    level = _level()
    source = _source(bundle)
    _scores(bundle, level, source)  # 400 for a source without patient-level figures
    threshold = _threshold_or_400(points.active_point(bundle, level).point.threshold)
    return jsonify(studio_data(bundle, level, threshold, source))


@bp.get("/<bundle_id>/changed")
def changed(bundle_id: str) -> str:
    """Stored results whose label would change at this threshold (they keep their own)."""
    bundle = get_bundle_or_404(bundle_id)
    level = _level()
    threshold = _float_arg("threshold", 0.5, 0.0, 1.0)
    results = db.session.scalars(points.would_change(bundle, level, threshold)).all()
    return render(
        "studio/changed.html", bundle=bundle, level=level, threshold=threshold, results=results
    )


@bp.post("/<bundle_id>/points")
@permission("operating_points")
def save(bundle_id: str) -> ResponseReturnValue:
    """Save the slider's threshold as a named operating point, and make it active if asked."""
    bundle = get_bundle_or_404(bundle_id)
    level = _level(request.form)
    threshold = request.form.get("threshold", type=float)
    if threshold is None:
        abort(400, description="threshold must be a number between 0 and 1")
    try:
        record = points.save_point(
            bundle,
            level,
            request.form.get("name", ""),
            threshold,
            created_by=_author(),
            activate=request.form.get("activate") == "on",
        )
    except points.PointError as exc:
        abort(400, description=str(exc))
    flash(
        f"Saved {record.name} at {record.threshold:.3f}"
        + (" and made it active" if record.active else "")
    )
    return redirect(
        url_for(".page", bundle_id=bundle.id, level=level, threshold=record.threshold), 303
    )


@bp.post("/<bundle_id>/points/activate")
@permission("operating_points")
def activate(bundle_id: str) -> ResponseReturnValue:
    """Make a stored point (the bundle's own or a saved one) the one that labels new results,
    once the user has confirmed it (a page asks when the browser has not)."""
    bundle = get_bundle_or_404(bundle_id)
    level = _level(request.form)
    name = request.form.get("name", "")
    saved = next((r for r in points.saved_points(bundle, level) if r.name == name), None)
    if request.form.get("confirmed") != "yes":
        return _confirm_activation(bundle, level, name, saved)
    try:
        if saved is not None:
            points.activate_saved(saved)
        else:
            points.adopt_bundle_point(bundle, level, name, created_by=_author())
    except points.PointError as exc:
        abort(400, description=str(exc))
    flash(f"{name} is now the active {level} operating point")
    return redirect(url_for(".page", bundle_id=bundle.id, level=level), 303)


@bp.post("/<bundle_id>/points/delete")
@permission("operating_points")
def delete(bundle_id: str) -> ResponseReturnValue:
    """Delete a point saved in this deployment (not the bundle's own, not the active one)."""
    bundle = get_bundle_or_404(bundle_id)
    level = _level(request.form)
    try:
        record = points.delete_saved(bundle, level, request.form.get("name", ""))
    except points.PointError as exc:
        abort(exc.status, description=f"{exc}. Nothing was deleted.")
    flash(f"Deleted the {level} operating point {record.name} ({record.threshold:.3f})")
    return redirect(url_for(".page", bundle_id=bundle.id, level=level), 303)


def _confirm_activation(
    bundle: Bundle, level: str, name: str, saved: OperatingPointRecord | None
) -> str:
    """The page that asks before a point is made active; it changes nothing."""
    own, _ = points.bundle_points(bundle, level)
    point = saved or next((p for p in own if p.name == name), None)
    if point is None:
        abort(400, description=f"no {level} operating point called {name!r}; pick one listed")
    active = points.active_point(bundle, level)
    changed = db.session.scalars(points.would_change(bundle, level, point.threshold)).all()
    return render(
        "studio/confirm.html",
        bundle=bundle,
        level=level,
        point=point,
        active=active,
        changed_count=len(changed),
    )


def _prevalence() -> tuple[float | None, str | None]:
    """The deployment prevalence asked for (None when not given), or why it is refused."""
    raw = request.args.get("prevalence", "").strip()
    if not raw:
        return None, None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        return None, f"{PREVALENCE_RULE}, not {raw!r}."
    return value, None


def _threshold_or_400(default: float) -> float:
    """The `threshold` query value, `default` when absent; 400 unless within [0, 1]."""
    if "threshold" not in request.args:
        return default
    value = request.args.get("threshold", type=float)
    if value is None or not 0.0 <= value <= 1.0:
        abort(400, description="threshold must be a number between 0 and 1, like 0.5")
    return value


def _author() -> str:
    """The logged-in user; without logins, the name typed into the form."""
    user = current_user()
    if user is not None:
        return user.name
    return request.form.get("created_by") or "studio user"


def _level(source=None) -> str:
    level = (source or request.args).get("level", "slice")
    if level not in points.FILES:
        abort(400, description="level must be slice or patient")
    return level


def _source(bundle: Bundle) -> str | None:
    """The data source asked for (None: every source); 400 for one the bundle was not
    trained on."""
    source = request.args.get("source", "").strip()
    if not source:
        return None
    known = oof_sources(bundle)
    if source not in known:
        listed = ", ".join(known) or "none recorded"
        abort(400, description=f"source must be one the bundle was trained on ({listed})")
    return source


def _one_class_sources(bundle: Bundle) -> list[str]:
    """Sources without patient-level figures: every patient has the same label."""
    found = []
    for name in oof_sources(bundle):
        try:
            points.oof_scores(bundle, "patient", name)
        except OneClassSource:
            found.append(name)
    return found


def _scores(bundle: Bundle, level: str, source: str | None):
    try:
        return points.oof_scores(bundle, level, source)
    except OneClassSource as exc:
        abort(400, description=str(exc))


def _float_arg(name: str, default: float, low: float, high: float) -> float:
    value = request.args.get(name, type=float)
    if value is None or not low <= value <= high:
        return default
    return value
