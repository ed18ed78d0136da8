"""Routes of one stored result."""

from __future__ import annotations

from flask import Blueprint, abort, make_response, redirect, request, send_file, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm.exc import StaleDataError

from webapp import audit
from webapp.auth.guard import permission
from webapp.bundles.points import active_threshold
from webapp.bundles.store import active_bundle
from webapp.errors import ModelNotLoaded, error_response
from webapp.extensions import db
from webapp.models import LABELS, REVIEWS, Prediction, SliceResult, now
from webapp.predict.service import delete_prediction
from webapp.render import is_htmx, render
from webapp.results import explain, images, records, viewer

bp = Blueprint("results", __name__, url_prefix="/predictions")
NOTE_LIMIT = 5000


def get_slice_or_404(prediction: Prediction, position: int) -> SliceResult:
    if not 0 <= position < len(prediction.slices):
        abort(404)
    return prediction.slices[position]


@bp.get("/<int:prediction_id>")
def detail(prediction_id: int) -> ResponseReturnValue:
    """A result: the slice, its numbers and their provenance; `viewer` is its HTMX fragment."""
    prediction = records.get_prediction_or_gone(prediction_id)
    view = _viewer(prediction)
    page = render("results/detail.html", "viewer", p=prediction, **view, **_provenance(prediction))
    response = make_response(page)
    # Going Back to this page asks the server again, so a result deleted meanwhile says so.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<int:prediction_id>/slices/<int:position>/image.png")
def image(prediction_id: int, position: int) -> ResponseReturnValue:
    """The slice under a window (`?window=model|brain|subdural|stroke|bone`), as a PNG."""
    prediction = records.get_prediction_or_gone(prediction_id)
    slice_result = get_slice_or_404(prediction, position)
    try:
        path = images.window_png(prediction, slice_result, request.args.get("window", "model"))
    except ValueError as exc:
        abort(400, description=str(exc))
    return send_file(path, mimetype="image/png", max_age=3600)


@bp.get("/<int:prediction_id>/slices/<int:position>/cam.png")
def cam(prediction_id: int, position: int) -> ResponseReturnValue:
    """The Grad-CAM heat map (colours only; the page lays it over the slice)."""
    prediction = _prediction_for_cam(prediction_id)
    slice_result = get_slice_or_404(prediction, position)
    try:
        path = explain.ensure_cam(prediction, slice_result, request.args.get("method", "gradcam"))
    except explain.CamInProgress:
        return _cam_busy()
    except (explain.CamUnavailable, ModelNotLoaded) as exc:
        abort(409, description=str(exc))
    except explain.ResultGone as exc:
        abort(410, description=str(exc))
    return send_file(path, mimetype="image/png", max_age=3600)


@bp.get("/<int:prediction_id>/slices/<int:position>/cam")
def cam_info(prediction_id: int, position: int) -> ResponseReturnValue:
    """Makes the heat map, or says another request is making it; a fragment with its figure."""
    prediction = _prediction_for_cam(prediction_id)
    slice_result = get_slice_or_404(prediction, position)
    view = viewer.viewer_state(prediction, request.args)
    outcome = _make_cam(prediction, slice_result, view.method, waited=_waited())
    if not is_htmx():
        return redirect(view.url(position=position))
    return render("results/detail.html", "cam_info", p=prediction, s=slice_result, view=view,
                  methods=explain.METHODS, cam_limit_s=viewer.CAM_LIMIT_S,
                  lesion_check=lesion_check(prediction), **outcome)  # fmt: skip


@bp.post("/<int:prediction_id>/note")
@permission("annotate")
def note(prediction_id: int) -> ResponseReturnValue:
    """Save the free-text note of the result the page showed; a longer note is refused, not cut."""
    prediction = records.get_prediction_for_change(
        prediction_id, request.form, "your note was not saved"
    )
    # Browsers send a line break as CRLF but count it as one character against maxlength.
    text = request.form.get("note", "").replace("\r\n", "\n").replace("\x00", "").strip()
    if len(text) > NOTE_LIMIT:
        abort(
            400,
            description=f"The note is {len(text):,} characters long; at most {NOTE_LIMIT:,} are "
            "kept. Nothing was saved: shorten it and save again.",
        )
    prediction.note = text
    audit.record("note", records.target(prediction), record=prediction.public_id, length=len(text))
    _commit(prediction, "your note was not saved")
    return _annotations(prediction, saved=f"Note saved on result {prediction.id}.")


@bp.post("/<int:prediction_id>/review")
@permission("annotate")
def review(prediction_id: int) -> ResponseReturnValue:
    """Record the reviewer's agree/disagree and, when known, the true label."""
    prediction = records.get_prediction_for_change(
        prediction_id, request.form, "your review was not saved"
    )
    verdict, truth = request.form.get("review") or None, request.form.get("true_label") or None
    if verdict not in (*REVIEWS, None) or truth not in (*LABELS, None):
        abort(400, description="review must be agree or disagree; true label Normal or Stroke")
    prediction.review, prediction.true_label = verdict, truth
    prediction.reviewed_at = now() if verdict or truth else None
    audit.record(
        "review",
        records.target(prediction),
        record=prediction.public_id,
        review=verdict,
        true_label=truth,
    )
    _commit(prediction, "your review was not saved")
    return _annotations(prediction, saved=f"Review saved on result {prediction.id}.")


@bp.get("/<int:prediction_id>/delete")
@permission("delete")
def confirm_delete(prediction_id: int) -> str:
    """Ask before deleting (the page a browser without JavaScript gets)."""
    return render("results/delete.html", p=records.get_prediction_or_gone(prediction_id))


@bp.post("/<int:prediction_id>/delete")
@permission("delete")
def delete(prediction_id: int) -> ResponseReturnValue:
    """Delete the result the page showed, its slices and every file stored for them."""
    prediction = records.get_prediction_for_change(
        prediction_id, request.form, "nothing was deleted", versioned=False
    )
    delete_prediction(prediction)
    target = url_for("history.listing", deleted=prediction_id)
    if is_htmx():
        return "", 200, {"HX-Redirect": target}
    return redirect(target, 303)


def _prediction_for_cam(prediction_id: int) -> Prediction:
    """The result whose heat map is asked for, tied to the page by `record` in the URL."""
    return records.get_prediction_for_change(
        prediction_id, request.args, "no heat map was made", versioned=False
    )


def _commit(prediction: Prediction, what: str) -> None:
    """Commit an edit, refused when another one reached the result first (its version moved)."""
    number = prediction.id
    try:
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        abort(409, description=records.changed_message(number, what))


def _annotations(prediction: Prediction, saved: str) -> ResponseReturnValue:
    if not is_htmx():
        return redirect(url_for(".detail", prediction_id=prediction.id), 303)
    return render("results/detail.html", "annotations", p=prediction, saved=saved)


def _viewer(prediction: Prediction) -> dict:
    """What the viewer block needs: the state asked for, the slice, its windows and overlay."""
    view = viewer.viewer_state(prediction, request.args)
    slice_result = get_slice_or_404(prediction, view.position)
    return {
        "view": view,
        "s": slice_result,
        "windows": images.windows_for(slice_result),
        "presets": images.WINDOW_PRESETS,
        "placement": images.placement(prediction, slice_result),
        "cam_ready": explain.cam_ready(slice_result, view.method),
        "methods": explain.METHODS,
        "cam_limit_s": viewer.CAM_LIMIT_S,
        "scripted": is_htmx(),  # an htmx request: the browser runs JavaScript
    }


def _make_cam(prediction: Prediction, slice_result: SliceResult, method: str, waited: int) -> dict:
    """Make the heat map unless another request is at it: what the cam_info fragment shows."""
    wait = 0 if is_htmx() else None  # a page with htmx polls instead of waiting
    try:
        explain.ensure_cam(prediction, slice_result, method, wait=wait)
    except explain.CamInProgress as exc:
        if waited >= viewer.CAM_LIMIT_S:
            return {"cam_problem": f"the heat map was still not ready after {waited} s ({exc})"}
        return {"cam_pending": True, "waited": waited + viewer.POLL_S}
    except (explain.CamUnavailable, ModelNotLoaded) as exc:
        return {"cam_problem": str(exc)}
    except explain.ResultGone as exc:
        abort(410, description=str(exc))
    db.session.refresh(slice_result)  # another request may have made the map meanwhile
    return {"cam_oob": True}


def _waited() -> int:
    """Seconds a polling page has already waited for a heat map another request makes."""
    return min(max(request.args.get("waited", 0, type=int), 0), 10 * viewer.CAM_LIMIT_S)


def _cam_busy() -> ResponseReturnValue:
    """503: another request is still making the heat map (for longer than explain.WAIT_S)."""
    message = "Another request is still making this heat map; reload the page in a few seconds."
    response = make_response(error_response(503, message, "in_progress"))
    response.headers["Retry-After"] = str(viewer.POLL_S)
    return response


def _provenance(prediction: Prediction) -> dict:
    """How this result relates to the model and threshold in force now."""
    bundle, _ = active_bundle()
    other_bundle = bundle is None or bundle.id != prediction.bundle_id
    current = None if other_bundle else active_threshold(prediction.kind)
    return {
        "other_bundle": other_bundle,
        "current_threshold": current,
        "label_now": None if current is None else LABELS[int(prediction.score >= current)],
        "lesion_check": lesion_check(prediction),
    }


def lesion_check(prediction: Prediction) -> list[dict]:
    """How often the bundle's heat-map peak fell in an outlined lesion, out of fold, per source
    with masks (its metrics.json); empty for other bundles and bundles without masks."""
    bundle, _ = active_bundle()
    if bundle is None or bundle.id != prediction.bundle_id:
        return []
    found = (bundle.metrics.get("cam_in_lesion") or {}).get("by_source", {})
    return [{"source": source, **figures} for source, figures in found.items()]
