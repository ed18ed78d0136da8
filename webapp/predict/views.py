"""Routes of the upload page and of prediction jobs."""

from __future__ import annotations

from flask import Blueprint, redirect, request, url_for
from werkzeug.wrappers import Response

from webapp.auth.guard import permission
from webapp.bundles.store import active_bundle, predicting_bundle, running
from webapp.extensions import db
from webapp.models import Job
from webapp.predict import service
from webapp.predict.jobs import QueueUnavailable
from webapp.render import is_htmx, render

bp = Blueprint("predict", __name__)


@bp.get("/")
def upload_form() -> str:
    """The upload page."""
    return _upload_page()


@bp.post("/predict")
@permission("upload")
def upload() -> Response | tuple[str, int]:
    """Validate every file, store them, predict (now or as a job), show the outcome."""
    predicting_bundle()  # refuses, saying why, before anything is read or stored
    try:
        slices = service.read_upload(request.files.getlist("files"))
        job = service.submit(slices, as_study=request.form.get("study") == "on")
    except (service.BadUpload, QueueUnavailable) as exc:
        return _upload_page(error=str(exc)), exc.status
    return redirect(url_for("predict.job", job_id=job.id), 303)


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> Response | str | tuple[str, int, dict[str, str]]:
    """Progress of a job; once it is done, its result (htmx polling stops on status 286)."""
    job = db.get_or_404(Job, job_id)
    if job.status == "done":
        target = _result_url(job)
        if is_htmx():
            return "", 286, {"HX-Redirect": target}
        return redirect(target, 303)
    if job.status == "failed" and is_htmx():
        return render("predict/job.html", "progress", job=job), 286, {}
    return render("predict/job.html", "progress", job=job)


def _result_url(job: Job) -> str:
    if len(job.predictions) == 1:
        return url_for("results.detail", prediction_id=job.predictions[0].id)
    return url_for("history.listing", job=job.id)


def _upload_page(error: str | None = None) -> str:
    bundle, problem = active_bundle()
    cannot = running().get("error") if bundle else None
    return render("predict/upload.html", bundle=bundle, problem=problem, cannot=cannot, error=error)
