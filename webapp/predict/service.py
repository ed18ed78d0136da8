"""From an upload to stored predictions: validate everything first, then store, then predict.

Nothing is written until every file of an upload decodes as a CT slice, so a bad file leaves
the database and the upload folder as they were. Predictions run slice by slice so that a job
can report progress; a study is scored by the Predictor's own study rule.
"""

from __future__ import annotations

import errno
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, g
from sqlalchemy import update
from werkzeug.datastructures import FileStorage

from ml import (
    Bundle,
    OperatingPoint,
    UnreadableImage,
    UnreadableInput,
    read_slice,
    read_zip,
    sniff_format,
)
from webapp import audit, storage
from webapp.bundles import points
from webapp.bundles.points import ActivePoint
from webapp.bundles.store import register, using_predictor
from webapp.extensions import db
from webapp.models import Job, Prediction, SliceResult
from webapp.predict import jobs

if TYPE_CHECKING:  # torch loads when a job first runs, not when the app starts
    from ml import Predictor, SlicePrediction

log = logging.getLogger(__name__)
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


class BadUpload(ValueError):
    """An upload that cannot be predicted; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadedSlice:
    name: str
    data: bytes
    file_format: str
    info: dict[str, Any]
    from_zip: bool = False  # a zip holds a series: its slices are always one study


def app_version() -> str:
    try:
        return version("ctstroke")
    except PackageNotFoundError:
        return "unknown"


def read_upload(files: list[FileStorage]) -> list[UploadedSlice]:
    """Every slice in the uploaded files (zips expanded), each decoded once to prove it reads."""
    files = [f for f in files if f and f.filename]
    if not files:
        raise BadUpload("no file was chosen: pick one or more PNG, JPEG or DICOM files", 400)
    limit = current_app.config["MAX_IMAGE_PIXELS"]
    slices = []
    for upload in files:
        data = upload.read()
        filename = (upload.filename or "").replace("\x00", "") or "upload"  # PostgreSQL: no NUL
        entries, from_zip = _entries(filename, data)
        for name, content in entries:
            try:
                decoded = read_slice(content, max_pixels=limit)
            except UnreadableImage as exc:
                raise BadUpload(f"{name}: {exc}", _status_for(content)) from None
            slices.append(UploadedSlice(name, content, decoded.format, decoded.info, from_zip))
    if len(slices) > current_app.config["MAX_STUDY_SLICES"]:
        raise BadUpload(
            f"{len(slices)} slices in one upload; the limit is "
            f"{current_app.config['MAX_STUDY_SLICES']}: split the study",
            413,
        )
    return slices


def _entries(filename: str, data: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    """(name, bytes) of each slice in one uploaded file (itself, or a zip's members); is a zip."""
    if data[:4] != b"PK\x03\x04":
        return [(filename, data)], False
    try:
        members = read_zip(data)
    except UnreadableInput as exc:
        raise BadUpload(f"{filename}: {exc}") from None
    if not members:
        raise BadUpload(f"{filename}: the zip holds no PNG, JPEG or DICOM files")
    return [(f"{filename}/{m.name}", m.data) for m in members], True


def _status_for(content: bytes) -> int:
    """400 for an empty file, 415 for one of a type we do not read, 422 for a damaged one."""
    if not content:
        return 400
    return 422 if sniff_format(content[:132]) else 415


def create_job(
    slices: list[UploadedSlice], as_study: bool, options: dict[str, Any] | None = None
) -> Job:
    """Store the validated slices under generated names; record the job that will predict them."""
    as_study = as_study or any(s.from_zip for s in slices)
    mode = "slice" if len(slices) == 1 else ("study" if as_study else "batch")
    inputs: list[dict[str, Any]] = []
    try:
        for s in slices:
            stored = storage.store(s.data, s.file_format)
            inputs.append(
                {
                    "name": s.name,
                    "stored": stored,
                    "sha256": storage.sha256(s.data),
                    "format": s.file_format,
                    "info": s.info,
                }
            )
        job = Job(
            id=secrets.token_hex(16), mode=mode, total=len(inputs), inputs=inputs, options=options
        )
        db.session.add(job)
        audit.record("upload", f"job {job.id}", mode=mode, slices=len(inputs), options=options)
        db.session.commit()
    except BaseException as exc:  # nothing of a failed upload stays: no row, no file
        db.session.rollback()
        for item in inputs:
            storage.discard(item["stored"])
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise BadUpload(
                "the server has no space left to store this upload; nothing was stored. "
                "Tell the administrator.",
                507,
            ) from None
        raise
    for item in inputs:  # only now do the files appear under the names the job refers to
        storage.publish(item["stored"])
    return job


def submit(
    slices: list[UploadedSlice],
    as_study: bool,
    options: dict[str, Any] | None = None,
    *,
    background: bool = False,
) -> Job:
    """Store an upload as a job and start it; with the job queue unreachable, store nothing.

    `background`: never predict within the request, however small the upload.
    """
    inline = len(slices) <= current_app.config["INLINE_SLICES"] and not background
    if not inline and jobs.uses_queue():
        jobs.check_reachable()  # before the first byte is written
    job = create_job(slices, as_study, options)
    start(job, background=background)
    return job


def start(job: Job, *, background: bool = False) -> None:
    """Predict now when the upload is small (unless `background`), otherwise on the job queue
    (JOB_QUEUE=rq) or in this process's job thread."""
    if job.total <= current_app.config["INLINE_SLICES"] and not background:
        run_job(job.id)
    elif jobs.uses_queue():
        _enqueue(job)
    else:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        _job_executor().submit(_run_in_app, app, job.id)


def _enqueue(job: Job) -> None:
    try:
        jobs.enqueue(run_queued_job, job.id)
    except jobs.QueueUnavailable as exc:
        # Redis went away after submit's check: the job ends like a failed prediction.
        jobs.fail(job, str(exc))
        raise


def _job_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctstroke-job")
        return _executor


def _run_in_app(app: Flask, job_id: str) -> None:
    with app.app_context():
        g.audit_actor = "job worker"
        run_job(job_id)


def run_queued_job(job_id: str) -> None:
    """Run a job taken from the Redis queue; `flask worker` provides the app context."""
    if db.session.get(Job, job_id) is None:  # a worker set up apart from the web app
        url = db.engine.url.render_as_string(hide_password=True)
        raise LookupError(
            f"job {job_id} is not in the database {url}: run the worker with the web app's "
            "settings (DATABASE_URL, UPLOAD_DIR, BUNDLE_DIR)"
        )
    g.audit_actor = "job worker"
    run_job(job_id)


def run_job(job_id: str) -> None:
    """Predict every slice of a job and store the results; on failure store none of them.

    A job that `flask jobs reap` failed meanwhile (and whose files it deleted) stays failed:
    every change of status is conditional on the status this run left it in.
    """
    job = db.session.get(Job, job_id)
    if job is None or not _moved(job_id, "queued", "running"):
        return
    db.session.commit()
    try:
        predictions = _predict_job(job)
        db.session.add_all(predictions)
        if not _moved(job_id, "running", "done"):
            log.warning("job %s was reaped while it ran; its results are not stored", job_id)
            db.session.rollback()
            return
        db.session.flush()  # gives the results their numbers, which the audit rows name
        for made in predictions:
            audit.record("predict", f"prediction {made.id}", record=made.public_id, job=job_id)
        db.session.commit()
    except Exception as exc:  # the job must end, whatever went wrong; the log keeps the trace
        log.exception("job %s failed", job_id)
        db.session.rollback()
        _moved(job_id, "running", "failed", error=f"prediction failed: {exc}")
        db.session.commit()
        for item in job.inputs:
            storage.remove(item["stored"])


def _moved(job_id: str, was: str, status: str, error: str | None = None) -> bool:
    """Set a job's status if it still is `was` (the caller commits); whether it was."""
    moved = db.session.execute(
        update(Job).where(Job.id == job_id, Job.status == was).values(status=status, error=error)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


def _predict_job(job: Job) -> list[Prediction]:
    inputs, order_by = _ordered(job.inputs) if job.mode == "study" else (job.inputs, None)
    with using_predictor() as predictor:
        is_study = job.mode == "study"
        slice_point = labelling_point(predictor.bundle, "slice", job.options, required=not is_study)
        study_point = (
            labelling_point(predictor.bundle, "patient", job.options) if is_study else None
        )
    # A study's slices are read in order, so that a 2.5D bundle sees each with its neighbours.
    paths = [storage.path_of(item["stored"]) for item in inputs]
    names = [item["name"] for item in inputs]
    results: list[tuple[dict[str, Any], SlicePrediction]] = []
    for index, item in enumerate(inputs):
        with using_predictor() as predictor:
            if is_study:
                prepared = predictor.prepare_at(paths, index, names)
            else:
                prepared = predictor.prepare(paths[index], names[index])
            [result] = predictor.predict_prepared(
                [prepared], point=slice_point.point, half_width=slice_point.half_width
            )
            results.append((item, result))
        job.done += 1
        db.session.commit()
    with using_predictor() as predictor:
        register(predictor.bundle)
        if study_point is not None:  # a study
            return [_study_row(job, predictor, results, order_by, study_point)]
        return [_slice_row(job, predictor, item, result) for item, result in results]


def labelling_point(
    bundle: Bundle, level: str, options: dict[str, Any] | None, *, required: bool = True
) -> ActivePoint:
    """The point a job labels with: a requested threshold or named point, else the active one.

    A named point that does not exist at this level is an error when `required`; otherwise
    (a study's slices, when only the patient level has the name) the active point applies.
    """
    options = options or {}
    if options.get("threshold") is not None:
        threshold = float(options["threshold"])
        point = OperatingPoint(name="requested", policy="request", threshold=threshold)
        return ActivePoint(point, points.band(bundle, level, threshold), "request")
    if options.get("operating_point"):
        try:
            return points.named_point(bundle, level, options["operating_point"])
        except points.PointError:
            if required:
                raise
    return points.active_point(bundle, level)


def delete_prediction(prediction: Prediction) -> None:
    """Delete a result, its slices and every file stored for them."""
    stored = [s.stored_name for s in prediction.slices]
    audit.record(
        "delete",
        f"prediction {prediction.id}",
        record=prediction.public_id,
        name=prediction.name,
        slices=len(stored),
    )
    db.session.delete(prediction)
    db.session.commit()
    for name in stored:
        storage.remove(name)


def _ordered(inputs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Slice order from the decoder's tags (position, instance number) or the file names."""
    from ml import order_slices

    keyed = [_Ordered(item["name"], item["info"], item) for item in inputs]
    ordered, order_by = order_slices(keyed)  # type: ignore[arg-type]
    return [o.item for o in ordered], order_by


@dataclass(frozen=True)
class _Ordered:
    name: str
    info: dict[str, Any]
    item: dict[str, Any]


def _provenance(job: Job, predictor: Predictor) -> dict[str, Any]:
    cfg = predictor.cfg
    return {
        "job_id": job.id,
        "bundle_id": predictor.bundle.id,
        "bundle_name": predictor.bundle.name,
        "app_version": app_version(),
        "preprocessing": {
            "windows": [list(w) for w in cfg.windows],
            "image_size": cfg.image_size,
            "views": list(predictor.views),
            "view_aggregation": predictor.view_aggregation,
            **predictor.runtime,
            "png16_hu_offset": cfg.png16_hu_offset,
            "crop_head": cfg.crop_head,
            "input_mode": cfg.input_mode,
        },
    }


def _verdict(result: SlicePrediction) -> dict[str, Any]:
    """What a slice's prediction says, as both its slice row and a one-slice result store it."""
    return {
        "label": result.label,
        "uncertain": result.uncertain,
        "uncertain_reasons": result.uncertain_reasons,
    }


def _slice_result(item: dict[str, Any], result: SlicePrediction, position: int) -> SliceResult:
    return SliceResult(
        position=position,
        original_name=item["name"][:300],
        stored_name=item["stored"],
        file_format=item["format"],
        content_sha256=item["sha256"],
        probability=result.probability,
        fold_probabilities=result.fold_probabilities,
        fold_std=result.fold_std,
        view_std=result.view_std,
        info=item["info"],
        input_warning=result.input_warning,
        **_verdict(result),
    )


def _slice_row(
    job: Job, predictor: Predictor, item: dict[str, Any], result: SlicePrediction
) -> Prediction:
    slice_result = _slice_result(item, result, 0)
    return Prediction(
        kind="slice",
        name=slice_result.original_name,
        content_sha256=slice_result.content_sha256,
        operating_point=result.operating_point,
        threshold=result.threshold,
        score=result.probability,
        slices=[slice_result],
        **_verdict(result),
        **_provenance(job, predictor),
    )


def _study_row(
    job: Job,
    predictor: Predictor,
    results: list[tuple[dict[str, Any], SlicePrediction]],
    order_by: str | None,
    study_point: ActivePoint,
) -> Prediction:
    study = predictor.study_from_slices(
        [r for _, r in results], order_by or "file_name", point=study_point.point
    )
    names = [item["name"] for item, _ in results]
    # The band holds the share of OOF patients whose scores lie nearest the patient threshold.
    near = abs(study.score - study.threshold) <= study_point.half_width
    reasons = ["study score close to the threshold"] if near else []
    odd = sum(r.input_warning is not None for _, r in results)
    if odd:
        reasons.append(f"{odd} of {len(results)} slices do not look like an axial head CT")
    return Prediction(
        kind="study",
        name=f"study of {len(names)} slices ({names[0]} … {names[-1]})"[:300],
        content_sha256=storage.sha256("".join(sorted(i["sha256"] for i, _ in results)).encode()),
        operating_point=study_point.point.name,
        threshold=study.threshold,
        score=study.score,
        label=study.label,
        uncertain=bool(reasons),
        uncertain_reasons=reasons,
        aggregation=study.aggregation,
        order_by=study.order_by,
        slices=[_slice_result(item, r, i) for i, (item, r) in enumerate(results)],
        **_provenance(job, predictor),
    )
