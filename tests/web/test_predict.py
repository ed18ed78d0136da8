"""Upload and prediction: validation by content, nothing stored on bad input, jobs, provenance."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flask import Flask

from ml.bundle import load_bundle
from ml.infer.predictor import Predictor
from tests.web.helpers import (
    count_predictions,
    ct_dicom,
    phantom_slices,
    png_declaring,
    stored_files,
    upload,
    wait_for_job,
)
from webapp.extensions import db
from webapp.models import Job, Prediction


def _only_prediction(app: Flask) -> Prediction:
    with app.app_context():
        predictions = db.session.scalars(db.select(Prediction)).all()
        assert len(predictions) == 1
        prediction = predictions[0]
        _ = prediction.slices  # load before the session closes
        return prediction


def test_one_slice_is_predicted_stored_and_shown(app, client, phantom_data, bundle_dir) -> None:
    content, name = phantom_slices(phantom_data, 1)[0]
    response = upload(client, [(content, name)])
    assert response.status_code == 303
    result = client.get(response.headers["Location"], follow_redirects=True)
    assert result.status_code == 200
    prediction = _only_prediction(app)
    page = result.get_data(as_text=True)
    assert f"Result {prediction.id}" in page and name in page

    expected = Predictor.from_bundle(bundle_dir / "tiny", backend="torch").predict([content])[0]
    assert prediction.score == pytest.approx(expected.probability, abs=1e-6)
    assert prediction.slices[0].fold_probabilities == pytest.approx(
        expected.fold_probabilities, abs=1e-6
    )
    assert prediction.label == expected.label and prediction.threshold == expected.threshold
    assert f"{expected.probability:.3f}" in page

    bundle = load_bundle(bundle_dir / "tiny")
    assert prediction.bundle_id == bundle.id and prediction.bundle_name == "tiny"
    assert prediction.operating_point == expected.operating_point
    assert prediction.preprocessing["image_size"] == bundle.train_config().image_size
    assert prediction.app_version not in ("", "unknown")
    from webapp.storage import sha256

    assert prediction.content_sha256 == sha256(content)

    files = stored_files(app)
    assert len(files) == 1 and files[0].read_bytes() == content
    assert name not in str(files[0])  # generated names only


def test_every_page_says_not_for_clinical_use(client) -> None:
    for url in ("/", "/history", "/model", "/models"):
        assert "Not for clinical use" in client.get(url).get_data(as_text=True), url


def test_pages_make_no_external_requests(client) -> None:
    response = client.get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    assert "http://" not in page and "https://" not in page
    assert "htmx-2.0.11.min.js" in page
    with client.get("/static/htmx-2.0.11.min.js") as script:
        assert script.status_code == 200


BAD_FILES = [
    (b"this is just text, not an image\n", "notes.png", 415, "not a PNG, JPEG or DICOM"),
    (b"", "empty.png", 400, "file is empty (0 bytes)"),
    (b"", "", 400, "no file was chosen"),
]


@pytest.mark.parametrize(("content", "name", "status", "message"), BAD_FILES)
def test_bad_files_are_refused_and_nothing_is_stored(
    app, client, content, name, status, message
) -> None:
    response = upload(client, [(content, name)])
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert message in page and "Nothing was stored" in page
    assert count_predictions(app) == 0 and stored_files(app) == []


def test_truncated_and_huge_images_are_refused(app, client, phantom_data) -> None:
    content, _ = phantom_slices(phantom_data, 1)[0]
    truncated = upload(client, [(content[: len(content) // 2], "cut.png")])
    assert truncated.status_code == 422
    assert "damaged or truncated" in truncated.get_data(as_text=True)
    huge = upload(client, [(png_declaring(20_000, 20_000), "huge.png")])
    assert huge.status_code == 422
    assert "more pixels than the limit allows" in huge.get_data(as_text=True)
    assert count_predictions(app) == 0 and stored_files(app) == []


def test_one_bad_file_in_a_study_stores_nothing(app, client, phantom_data) -> None:
    good = phantom_slices(phantom_data, 2)
    response = upload(client, [*good, (b"GIF89a....", "odd.png")], study=True)
    assert response.status_code == 415
    assert "odd.png" in response.get_data(as_text=True)
    assert count_predictions(app) == 0 and stored_files(app) == []
    with app.app_context():
        assert db.session.query(Job).count() == 0


def test_a_dicom_that_is_not_ct_is_refused(app, client, tmp_path) -> None:
    response = upload(client, [(ct_dicom(tmp_path, "mr.dcm", modality="MR"), "mr.dcm")])
    assert response.status_code == 422
    assert "modality is MR, not CT" in response.get_data(as_text=True)
    assert count_predictions(app) == 0 and stored_files(app) == []


def test_too_large_a_request_gets_413(make_app, phantom_data) -> None:
    app = make_app(MAX_CONTENT_LENGTH=2048)
    client = app.test_client()
    response = upload(client, [(b"\x89PNG" + b"0" * 4096, "big.png")])
    assert response.status_code == 413
    assert "larger than this server accepts" in response.get_data(as_text=True)
    assert count_predictions(app) == 0


def test_the_form_needs_its_csrf_token(app, client, phantom_data) -> None:
    content, name = phantom_slices(phantom_data, 1)[0]
    response = client.post(
        "/predict",
        data={"files": [(io.BytesIO(content), name)]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "form had expired" in response.get_data(as_text=True)
    assert count_predictions(app) == 0


def test_dicom_is_stored_without_identifying_tags(app, client, tmp_path) -> None:
    content = ct_dicom(tmp_path, "ct.dcm")
    assert upload(client, [(content, "ct.dcm")]).status_code == 303
    stored = pydicom.dcmread(stored_files(app)[0])
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
        assert keyword not in stored, keyword
    assert stored.PatientIdentityRemoved == "YES"
    original = pydicom.dcmread(io.BytesIO(content))
    assert np.array_equal(stored.pixel_array, original.pixel_array)
    assert _only_prediction(app).slices[0].file_format == "dicom"


def test_deidentification_can_be_switched_off(make_app, tmp_path) -> None:
    app = make_app(DEIDENTIFY_DICOM=False)
    content = ct_dicom(tmp_path, "ct.dcm")
    assert upload(app.test_client(), [(content, "ct.dcm")]).status_code == 303
    assert stored_files(app)[0].read_bytes() == content


def test_a_study_runs_as_a_job_and_is_scored_in_slice_order(app, client, tmp_path) -> None:
    files = [(ct_dicom(tmp_path, f"s{n}.dcm", number=n), f"s{n}.dcm") for n in (3, 1, 2)]
    response = upload(client, files, study=True)
    assert response.status_code == 303
    job_url = response.headers["Location"]
    job = wait_for_job(app, job_url.rsplit("/", 1)[-1])
    assert job.status == "done", job.error and job.done == 3

    polled = client.get(job_url, headers={"HX-Request": "true"})
    assert polled.status_code == 286  # htmx stops polling
    prediction = _only_prediction(app)
    assert polled.headers["HX-Redirect"].endswith(f"/predictions/{prediction.id}")
    assert prediction.kind == "study" and prediction.order_by == "slice_position"
    assert [s.original_name for s in prediction.slices] == ["s1.dcm", "s2.dcm", "s3.dcm"]
    assert prediction.aggregation == "mean"
    assert prediction.score == pytest.approx(np.mean([s.probability for s in prediction.slices]))
    page = client.get(job_url, follow_redirects=True).get_data(as_text=True)
    assert 'id="strip"' in page and page.count('class="strip-item') == 3


def test_job_page_polls_until_done(make_app, phantom_data) -> None:
    app = make_app(INLINE_SLICES=0)
    client = app.test_client()
    response = upload(client, phantom_slices(phantom_data, 1))
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    with app.app_context():  # mark it running again to see the page a browser sees meanwhile
        wait_for_job(app, job_id)
        job = db.session.get(Job, job_id)
        job.status, job.done = "running", 0
        db.session.commit()
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'hx-trigger="load delay:1s"' in page and "0 of 1 slices predicted" in page
    fragment = client.get(f"/jobs/{job_id}", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.get_data(as_text=True)


def test_several_files_without_study_are_separate_predictions(app, client, phantom_data) -> None:
    response = upload(client, phantom_slices(phantom_data, 3))
    job = wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    assert job.status == "done"
    assert count_predictions(app) == 3
    listing = client.get(response.headers["Location"], follow_redirects=True)
    assert listing.request.path == "/history" and "3 results" in listing.get_data(as_text=True)


def test_a_zip_is_one_study(app, client, phantom_data) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for content, name in phantom_slices(phantom_data, 3):
            archive.writestr(f"series/{name}", content)
        archive.writestr("series/readme.txt", "not a slice")
    response = upload(client, [(buffer.getvalue(), "series.zip")])  # a zip is always a study
    wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    prediction = _only_prediction(app)
    assert prediction.kind == "study" and len(prediction.slices) == 3


def test_a_failed_job_stores_nothing(make_app, phantom_data, monkeypatch) -> None:
    app = make_app()
    client = app.test_client()

    def broken(*args, **kwargs):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(Predictor, "predict_prepared", broken)
    response = upload(client, phantom_slices(phantom_data, 1))
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "nothing was stored" in page and "model exploded" in page
    assert count_predictions(app) == 0 and stored_files(app) == []


def test_no_model_means_no_prediction(app_without_bundle, phantom_data) -> None:
    client = app_without_bundle.test_client()
    assert "No model is loaded" in client.get("/").get_data(as_text=True)
    response = upload(client, phantom_slices(phantom_data, 1))
    assert response.status_code == 503
    assert count_predictions(app_without_bundle) == 0
    assert stored_files(app_without_bundle) == []


def test_uploads_stay_inside_the_upload_folder(app, client, phantom_data) -> None:
    content, _ = phantom_slices(phantom_data, 1)[0]
    assert upload(client, [(content, "../../escape.png")]).status_code == 303
    root = Path(app.config["UPLOAD_DIR"])
    assert all(root in f.parents for f in stored_files(app))
    assert _only_prediction(app).name == "../../escape.png"  # shown as given, never a path
