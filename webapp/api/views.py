"""Routes of /api/v1: predict, stored results, models and their operating points, health.

Every answer is JSON (or a PNG heat map); every error is `{"error": {"code", "message"}}`.
Uploads are predicted within the request, so a client gets its result in the response; with
`wait=false` they go to the job queue instead (202, then GET /jobs/ID until it is done), which
keeps a web worker free while a large batch or study is scored.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request, send_file, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from ml import Bundle
from webapp.api import openapi, serialise
from webapp.api.auth import require
from webapp.api.model_views import bp as models_bp
from webapp.api.params import ApiError, flag, optional_number, whole_number
from webapp.bundles import points
from webapp.bundles.store import active_bundle, predicting_bundle, running
from webapp.errors import error_response
from webapp.extensions import csrf, db
from webapp.history.query import BadFilter, Filters
from webapp.models import Job, Prediction
from webapp.predict import service
from webapp.predict.jobs import QueueUnavailable
from webapp.results import explain, records

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # clients authenticate with a bearer token, not a session cookie
bp.register_blueprint(models_bp)
MAX_PER_PAGE = 100


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> ResponseReturnValue:
    return error_response(exc.status, exc.message, exc.code)


@bp.errorhandler(service.BadUpload)
def _bad_upload(exc: service.BadUpload) -> ResponseReturnValue:
    return error_response(exc.status, f"{exc}. Nothing was stored.")


@bp.errorhandler(QueueUnavailable)
def _queue_unavailable(exc: QueueUnavailable) -> ResponseReturnValue:
    response, status = error_response(exc.status, str(exc), "queue_unavailable")
    return response, status, {"Retry-After": "30"}


@bp.errorhandler(points.PointError)
def _point_error(exc: points.PointError) -> ResponseReturnValue:
    return error_response(exc.status, str(exc))


@bp.errorhandler(BadFilter)
def _bad_filter(exc: BadFilter) -> ResponseReturnValue:
    return error_response(400, str(exc))


@bp.post("/predict")
@require("write")
def predict() -> ResponseReturnValue:
    """Check every file, store them, predict now; 201 with the stored result(s).

    `wait=false`: 202 with the job, predicted on the queue; its URL says when it is done.
    """
    as_study, with_cam, wait = flag("study"), flag("cam"), _wait()
    if with_cam and not wait:
        raise ApiError(
            400, "cam=true needs wait=true; fetch a heat map later from the slice's cam URL"
        )
    options = _labelling_options(predicting_bundle(), as_study)
    slices = service.read_upload(request.files.getlist("files"))
    if not wait:
        job = service.submit(slices, as_study, options, background=True)
        location = url_for(".job", job_id=job.id)
        return serialise.job(db.session.get(Job, job.id)), 202, {"Location": location}
    job = service.create_job(slices, as_study=as_study, options=options)
    service.run_job(job.id)
    return _job_outcome(job.id, with_cam)


@bp.get("/jobs/<job_id>")
@require("read")
def job(job_id: str) -> ResponseReturnValue:
    """A prediction job: queued, running (slices done so far), done (its results) or failed."""
    found = db.session.get(Job, job_id[:32])
    if found is None:
        raise ApiError(404, f"there is no job {job_id[:32]!r}")
    return serialise.job(found)


def _wait() -> bool:
    """`wait` is true unless the client says otherwise."""
    return "wait" not in request.values or flag("wait")


@bp.get("/predictions")
@require("read")
def predictions() -> ResponseReturnValue:
    """Stored results, filtered and sorted like the history page, one page at a time; a filter
    value the history does not know is a 400, never ignored."""
    page = whole_number("page", 1, minimum=1)
    per_page = whole_number("per_page", 25, minimum=1, maximum=MAX_PER_PAGE)
    filters = Filters.from_args(request.args, strict=True)
    query = filters.query().options(selectinload(Prediction.slices))
    found = db.paginate(query, page=page, per_page=per_page, error_out=False, count=True)
    return {
        "items": [serialise.prediction_summary(p) for p in found.items],
        "page": page,
        "per_page": per_page,
        "pages": found.pages,
        "total": found.total,
    }


@bp.get("/predictions/<int:prediction_id>")
@require("read")
def prediction(prediction_id: int) -> ResponseReturnValue:
    """One stored result with its slices and provenance."""
    return serialise.prediction_detail(_prediction_or_404(prediction_id))


@bp.delete("/predictions/<int:prediction_id>")
@require("write")
def delete_prediction(prediction_id: int) -> ResponseReturnValue:
    """Delete a result, its slices and every file stored for them."""
    found = _prediction_or_404(prediction_id)
    service.delete_prediction(found)
    return "", 204


@bp.get("/predictions/<int:prediction_id>/cam.png")
@require("read")
def prediction_cam(prediction_id: int) -> ResponseReturnValue:
    """The heat map of one slice (`slice`, `method`) as a PNG, made on first request."""
    found = _prediction_or_404(prediction_id)
    position = whole_number("slice", 0, minimum=0)
    if position >= len(found.slices):
        raise ApiError(404, f"prediction {prediction_id} has {len(found.slices)} slice(s)")
    method = request.args.get("method", serialise.CAM_METHOD)
    try:
        path = explain.ensure_cam(found, found.slices[position], method)
    except explain.CamUnavailable as exc:
        raise ApiError(409, str(exc)) from None
    except explain.ResultGone as exc:
        raise ApiError(410, str(exc)) from None
    response = send_file(path, mimetype="image/png", max_age=3600)
    response.cache_control.public = False  # behind a token: no shared cache may keep it
    response.cache_control.private = True
    return response


@bp.get("/health")
def health() -> ResponseReturnValue:
    """Whether a model can predict and the database answers (503 when either fails); no token.

    A bundle that loads but cannot run as configured (a precision its check refused) is not a
    loaded model: every prediction would fail.
    """
    bundle, _ = active_bundle()
    inference = running()  # its error names the bundle, never a server path
    ready = "error" not in inference
    database = _database_answers()
    healthy = ready and database
    body = {
        "status": "ok" if healthy else "degraded",
        "model_loaded": ready,
        "model_error": inference.get("error"),
        "bundle_id": bundle.id if bundle else None,
        "inference": inference if ready else None,
        "database": database,
        "version": service.app_version(),
    }
    return body, 200 if healthy else 503


@bp.get("/openapi.json")
def openapi_document() -> ResponseReturnValue:
    """The OpenAPI 3.0 description of these routes; no token."""
    return openapi.document(service.app_version())


def _labelling_options(bundle: Bundle, as_study: bool) -> dict[str, Any] | None:
    """A requested threshold or named point, checked before anything is stored.

    A named point must exist at the level it labels: patient level for a study, slice level
    otherwise (a study's slices use it too where the slice level has that name).
    """
    threshold = optional_number(request.form, "threshold")
    name = (request.form.get("operating_point") or "").strip()
    if threshold is not None and name:
        raise ApiError(400, "give threshold or operating_point, not both")
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ApiError(400, f"threshold must lie in [0, 1], got {threshold}")
        return {"threshold": threshold}
    if name:
        points.named_point(bundle, "patient" if as_study else "slice", name)
        return {"operating_point": name}
    return None


def _job_outcome(job_id: str, with_cam: bool) -> ResponseReturnValue:
    """201 with the job's stored prediction(s), or 500 with why it failed (nothing stored)."""
    job = db.session.get(Job, job_id)
    if job is None or job.status != "done":
        reason = job.error if job is not None else "the job was lost"
        raise ApiError(500, f"{reason}. Nothing was stored.", "prediction_failed")
    made = sorted(job.predictions, key=lambda p: p.id)
    if with_cam:
        for p in made:
            for s in p.slices:
                explain.ensure_cam(p, s, serialise.CAM_METHOD)
    if job.mode == "batch":
        return {"predictions": [serialise.prediction_detail(p) for p in made]}, 201
    location = url_for(".prediction", prediction_id=made[0].id)
    return serialise.prediction_detail(made[0]), 201, {"Location": location}


def _prediction_or_404(prediction_id: int) -> Prediction:
    """The prediction; 410 when it was deleted (its number is never reused), else 404."""
    found = db.session.get(Prediction, prediction_id)
    if found is not None:
        return found
    event = records.deletion(prediction_id)
    if event is not None:
        raise ApiError(410, f"{records.gone_message(prediction_id, event)}", "gone")
    raise ApiError(404, f"there is no prediction {prediction_id}")


def _database_answers() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        return False
    return True
