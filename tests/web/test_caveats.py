"""What results and uploads say about themselves: not for clinical use, a model that knows only
phantoms, an input that is not a head CT; on the pages and in every prediction's JSON."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from PIL import Image
from sqlalchemy import inspect

from ml.bundle import load_bundle, write_manifest
from tests.web.helpers import BOTH_DATABASES, phantom_slices, upload, wait_for_job
from tests.web.test_api import API, api_predict, bearer, make_token
from webapp.bundles.caveats import NOT_FOR_CLINICAL_USE, SYNTHETIC_MODEL
from webapp.extensions import db
from webapp.models import BundleRecord, Prediction

pytestmark = BOTH_DATABASES


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


BLACK_8000 = None  # made once, on first use: encoding it takes a second


def black_8000() -> bytes:
    global BLACK_8000
    if BLACK_8000 is None:
        BLACK_8000 = _png(np.zeros((8000, 8000), np.uint8))
    return BLACK_8000


def relabel(bundle: Path, origin: str) -> None:
    """Rewrite a bundle's manifest as if its training data had come from `origin`; its report
    says so too, which gives it an id of its own (the id hashes the files, not the manifest)."""
    with (bundle / "report.md").open("a") as report:
        report.write(f"\nRelabelled for a test: trained on {origin}.\n")
    manifest = json.loads((bundle / "manifest.json").read_text())
    kept = {k: v for k, v in manifest.items() if k not in ("bundle_id", "format", "files")}
    kept.pop("packages", None)
    write_manifest(bundle, **{**kept, "data": {**manifest["data"], "origin": origin}, "notes": []})


@pytest.fixture
def real_app(make_app, bundle_dir: Path) -> Flask:
    """An app whose bundle says it was trained on real CT (the tiny bundle, relabelled)."""
    shutil.copytree(bundle_dir / "tiny", bundle_dir / "real")
    relabel(bundle_dir / "real", "CT-ICH (real CT)")
    assert not load_bundle(bundle_dir / "real").synthetic_only
    return make_app("real")


def _codes(body: dict) -> list[str]:
    return [w["code"] for w in body["warnings"]]


def test_the_upload_page_says_the_phantom_model_knows_no_real_ct(client) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'id="caveats"' in page and SYNTHETIC_MODEL in page and NOT_FOR_CLINICAL_USE in page


def test_a_real_ct_bundle_gets_no_phantom_warning(real_app: Flask, phantom_data) -> None:
    client = real_app.test_client()
    assert 'id="caveats"' not in client.get("/").get_data(as_text=True)
    headers = bearer(make_token(real_app, "read", "write"))
    body = api_predict(client, headers, phantom_slices(phantom_data, 1)).get_json()
    assert body["model_synthetic_only"] is False and body["not_for_clinical_use"] is True
    assert _codes(body) == ["not_for_clinical_use"] and body["looks_like_head_ct"] is True
    page = client.get(f"/predictions/{body['id']}").get_data(as_text=True)
    assert 'id="caveats"' not in page and SYNTHETIC_MODEL not in page


def test_every_prediction_json_says_what_made_it(app, client, phantom_data) -> None:
    headers = bearer(make_token(app, "read", "write"))
    made = api_predict(client, headers, phantom_slices(phantom_data, 2)).get_json()
    for body in made["predictions"]:
        assert body["not_for_clinical_use"] is True and body["model_synthetic_only"] is True
        assert _codes(body) == ["not_for_clinical_use", "synthetic_model"]
        assert body["looks_like_head_ct"] and body["slices"][0]["input_warning"] is None
    listed = client.get(f"{API}/predictions", headers=headers).get_json()["items"]
    assert all(_codes(p) == ["not_for_clinical_use", "synthetic_model"] for p in listed)
    one = client.get(f"{API}/predictions/{listed[0]['id']}", headers=headers).get_json()
    assert one["model_synthetic_only"] is True

    queued = api_predict(client, headers, phantom_slices(phantom_data, 1), wait="false")
    job_url = queued.headers["Location"]
    wait_for_job(app, job_url.rsplit("/", 1)[-1])
    job = client.get(job_url, headers=headers).get_json()
    assert job["status"] == "done" and job["model_synthetic_only"] is True
    assert _codes(job) == ["not_for_clinical_use", "synthetic_model"]
    assert _codes(job["predictions"][0]) == ["not_for_clinical_use", "synthetic_model"]


def test_an_8000_pixel_black_image_is_flagged_not_labelled_with_confidence(app, client) -> None:
    headers = bearer(make_token(app, "read", "write"))
    body = api_predict(client, headers, [(black_8000(), "black.png")]).get_json()
    assert body["looks_like_head_ct"] is False and body["uncertain"] is True
    assert "the image does not look like an axial head CT" in body["uncertain_reasons"]
    assert "not_head_ct" in _codes(body)
    [piece] = body["slices"]
    assert piece["looks_like_head_ct"] is False and "blank" in piece["input_warning"]
    page = client.get(f"/predictions/{body['id']}").get_data(as_text=True)
    assert 'data-code="not_head_ct"' in page and "blank" in page and SYNTHETIC_MODEL in page


def test_a_study_names_its_slices_that_are_not_a_head_ct(app, client, phantom_data) -> None:
    files = [*phantom_slices(phantom_data, 2), (_png(np.full((64, 64), 255, np.uint8)), "z.png")]
    response = upload(client, files, study=True)
    job = wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    assert job.status == "done"
    with app.app_context():
        study = db.session.scalars(db.select(Prediction)).one()
        assert study.uncertain and "1 of 3 slices do not look like an axial head CT" in (
            study.uncertain_reasons
        )
        assert [s.input_warning is None for s in study.slices] == [True, True, False]
        url = f"/predictions/{study.id}"
    page = client.get(url).get_data(as_text=True)
    assert "Slice 3 (z.png): the image does not look like an axial head CT" in page


def test_a_bundle_registered_before_its_origin_was_recorded_gets_it(app, runner) -> None:
    with app.app_context():
        bundle = load_bundle(Path(app.config["BUNDLE_DIR"]) / "tiny")
        db.session.add(BundleRecord(id=bundle.id, name="tiny", backbone="x", synthetic_only=None))
        db.session.commit()
    assert runner.invoke(args=["bundles", "sync"]).exit_code == 0
    with app.app_context():
        assert db.session.get(BundleRecord, bundle.id).synthetic_only is True


def test_the_caveats_migration_goes_down_and_up(app) -> None:
    with app.app_context():
        db.session.close()
        downgrade(revision="0008_record_integrity")
        upgrade()
        columns = {c["name"] for c in inspect(db.engine).get_columns("prediction_slices")}
        assert "input_warning" in columns
