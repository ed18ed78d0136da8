"""The JSON API under /api/v1: tokens and scopes, every route, every error, the OpenAPI document."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy.exc import OperationalError

from ml.bundle import load_bundle
from ml.evaluate import oof
from ml.infer.predictor import Predictor
from ml.metrics import scores as metrics
from tests.web.helpers import (
    BOTH_DATABASES,
    count_predictions,
    ct_dicom,
    phantom_slices,
    png_declaring,
    stored_files,
)
from webapp.api.auth import issue_token
from webapp.extensions import db
from webapp.history.query import Filters
from webapp.models import ApiToken, AuditEvent, OperatingPointRecord

pytestmark = BOTH_DATABASES
API = "/api/v1"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def make_token(app: Flask, *scopes: str) -> str:
    with app.app_context():
        _, token = issue_token("test", list(scopes))
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(app: Flask) -> dict[str, str]:
    """Headers of a token that may read and write."""
    return bearer(make_token(app, "read", "write"))


def api_predict(client: FlaskClient, headers: dict[str, str], files, **form: str):
    data: dict[str, object] = {"files": [(io.BytesIO(c), n) for c, n in files], **form}
    return client.post(
        f"{API}/predict", data=data, headers=headers, content_type="multipart/form-data"
    )


def assert_error(response, status: int, text: str = "") -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"code", "message"} and error["code"] and error["message"]
    assert text in error["message"]
    return error


def bundle_id(bundle_dir: Path) -> str:
    return load_bundle(bundle_dir / "tiny").id


# --- authentication and the token CLI ------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwdw=="},
     {"Authorization": "Bearer not-a-token"}],
    ids=["missing", "empty", "basic", "unknown"],
)  # fmt: skip
def test_requests_without_a_valid_token_get_401(client, headers) -> None:
    for response in (client.get(f"{API}/predictions", headers=headers),
                     client.post(f"{API}/predict", headers=headers)):  # fmt: skip
        assert_error(response, 401, "Bearer")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_cli_token_lifecycle_and_the_plain_token_is_never_stored(app, client, runner) -> None:
    created = runner.invoke(args=["tokens", "create", "pacs", "--scope", "read"])
    assert created.exit_code == 0, created.output
    token = created.output.splitlines()[1].strip()
    assert len(token) >= 40 and "will not be shown again" in created.output
    assert client.get(f"{API}/models", headers=bearer(token)).status_code == 200

    with app.app_context():
        record = db.session.scalars(db.select(ApiToken)).one()
        assert record.scopes == "read" and record.token_sha256 != token
        assert record.last_used_at is not None
        rows = db.session.execute(db.text("SELECT * FROM api_tokens")).all()
    assert token not in repr(rows)
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///"):  # PostgreSQL's files are the server's, out of reach here
        database = Path(uri.removeprefix("sqlite:///"))
        for file in database.parent.glob(database.name + "*"):  # the WAL file too
            assert token.encode() not in file.read_bytes()

    listed = runner.invoke(args=["tokens", "list"])
    assert "pacs" in listed.output and "read" in listed.output and token not in listed.output
    revoked = runner.invoke(args=["tokens", "revoke", str(record.id)])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert_error(client.get(f"{API}/models", headers=bearer(token)), 401)
    row = runner.invoke(args=["tokens", "list"]).output.splitlines()[1].split("\t")
    assert row[0] == str(record.id) and row[-1] != "-"  # the revoked column has its time
    assert runner.invoke(args=["tokens", "revoke", "999"]).exit_code != 0
    assert runner.invoke(args=["tokens", "create", "x", "--scope", "admin"]).exit_code != 0


def test_a_read_token_cannot_write_and_a_write_token_cannot_read(app, client, bundle_dir) -> None:
    reader, writer = bearer(make_token(app, "read")), bearer(make_token(app, "write"))
    points_url = f"{API}/models/{bundle_id(bundle_dir)}/operating-points"
    for response in (
        client.post(f"{API}/predict", headers=reader),
        client.delete(f"{API}/predictions/1", headers=reader),
        client.post(points_url, json={"name": "x", "threshold": 0.5, "level": "slice"},
                    headers=reader),
        client.post(f"{points_url}/youden/activate", json={"level": "slice"}, headers=reader),
        client.get(f"{API}/predictions", headers=writer),
    ):  # fmt: skip
        assert_error(response, 403, "scope")
    assert count_predictions(app) == 0


# --- predict --------------------------------------------------------------------------------


def test_predict_one_slice_stores_it_with_provenance(app, client, auth, phantom_data, bundle_dir):
    content, name = phantom_slices(phantom_data, 1)[0]
    response = api_predict(client, auth, [(content, name)])
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == f"{API}/predictions/{body['id']}"

    expected = Predictor.from_bundle(bundle_dir / "tiny", backend="torch").predict([content])[0]
    assert body["kind"] == "slice" and body["name"] == name
    assert body["score"] == pytest.approx(expected.probability, abs=1e-6)
    assert body["label"] == expected.label and body["threshold"] == expected.threshold
    assert body["operating_point"] == expected.operating_point
    assert isinstance(body["uncertain"], bool) and isinstance(body["uncertain_reasons"], list)
    [piece] = body["slices"]
    assert piece["fold_probabilities"] == pytest.approx(expected.fold_probabilities, abs=1e-6)
    assert {"fold_std", "view_std", "label", "uncertain"} <= set(piece)
    assert "cam_url" not in piece

    provenance = body["provenance"]
    assert provenance["bundle_id"] == bundle_id(bundle_dir) and provenance["bundle_name"] == "tiny"
    assert provenance["preprocessing"]["image_size"] > 0
    assert provenance["app_version"] not in ("", "unknown")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", provenance["created_at"])
    from webapp.storage import sha256

    assert provenance["content_sha256"] == sha256(content)
    assert client.get(response.headers["Location"], headers=auth).get_json() == body
    assert count_predictions(app) == 1 and len(stored_files(app)) == 1


def test_several_files_are_a_batch_unless_study(app, client, auth, phantom_data) -> None:
    files = phantom_slices(phantom_data, 3)
    batch = api_predict(client, auth, files)
    assert batch.status_code == 201
    made = batch.get_json()["predictions"]
    assert [p["kind"] for p in made] == ["slice"] * 3
    assert [p["name"] for p in made] == [n for _, n in files]
    study = api_predict(client, auth, files, study="true")
    assert study.status_code == 201
    body = study.get_json()
    assert body["kind"] == "study" and len(body["slices"]) == 3
    assert body["aggregation"] and body["order_by"] == "file_name"
    assert count_predictions(app) == 4


def test_a_dicom_study_is_ordered_by_position(client, auth, tmp_path) -> None:
    files = [(ct_dicom(tmp_path, f"s{n}.dcm", number=n), f"s{n}.dcm") for n in (3, 1, 2)]
    body = api_predict(client, auth, files, study="true").get_json()
    assert body["order_by"] == "slice_position"
    assert [s["name"] for s in body["slices"]] == ["s1.dcm", "s2.dcm", "s3.dcm"]
    assert body["score"] == pytest.approx(np.mean([s["probability"] for s in body["slices"]]))


def test_predict_with_cam_links_the_heat_map(app, client, auth, phantom_data) -> None:
    response = api_predict(client, auth, phantom_slices(phantom_data, 1), cam="true")
    assert response.status_code == 201
    [piece] = response.get_json()["slices"]
    assert set(piece["faithfulness"]["gradcam"]) >= {"drop_top", "drop_random", "probability"}
    with client.get(piece["cam_url"], headers=auth) as heat:
        assert heat.status_code == 200 and heat.mimetype == "image/png"
        assert "public" not in heat.headers["Cache-Control"]
        assert np.asarray(Image.open(io.BytesIO(heat.data))).ndim == 3


def test_a_requested_threshold_or_operating_point_labels_the_result(client, auth, phantom_data):
    files = phantom_slices(phantom_data, 1)
    low = api_predict(client, auth, files, threshold="0").get_json()
    assert low["threshold"] == 0.0 and low["label"] == "Stroke" and low["operating_point"]
    named = api_predict(client, auth, files, operating_point="specificity_0.90").get_json()
    assert named["operating_point"] == "specificity_0.90"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"threshold": "0.5", "operating_point": "youden"}, "not both"),
        ({"operating_point": "nope"}, "youden"),  # the valid names are listed
        ({"threshold": "1.5"}, "[0, 1]"),
        ({"threshold": "abc"}, "number"),
        ({"threshold": "nan"}, "finite"),
        ({"study": "maybe"}, "true or false"),
    ],
)
def test_bad_options_are_400_and_store_nothing(app, client, auth, phantom_data, form, message):
    response = api_predict(client, auth, phantom_slices(phantom_data, 1), **form)
    assert_error(response, 400, message)
    assert count_predictions(app) == 0 and stored_files(app) == []


BAD_FILES = [
    (b"this is just text, not an image\n", "notes.png", 415, "not a PNG, JPEG or DICOM"),
    (b"", "empty.png", 400, "empty"),
    (b"", "", 400, "no file was chosen"),
    (png_declaring(20_000, 20_000), "huge.png", 422, "pixels"),
]


@pytest.mark.parametrize(("content", "name", "status", "message"), BAD_FILES)
def test_bad_files_are_refused_and_nothing_is_stored(
    app, client, auth, phantom_data, content, name, status, message
) -> None:
    # Beside a good slice, so that nothing of a partly good upload is stored either.
    files = [*phantom_slices(phantom_data, 1), (content, name)] if name else [(content, name)]
    response = api_predict(client, auth, files, study="true")
    error = assert_error(response, status, message)
    assert "Nothing was stored" in error["message"]
    assert count_predictions(app) == 0 and stored_files(app) == []


def test_too_many_slices_and_too_large_a_request_are_413(make_app, phantom_data) -> None:
    app = make_app(MAX_STUDY_SLICES=1, MAX_CONTENT_LENGTH=200_000)
    client, auth = app.test_client(), bearer(make_token(app, "write"))
    assert_error(api_predict(client, auth, phantom_slices(phantom_data, 2)), 413, "limit is 1")
    big = [(b"\x00" * 300_000, "big.png")]
    assert_error(api_predict(client, auth, big), 413, "MB")
    assert count_predictions(app) == 0 and stored_files(app) == []


def test_a_truncated_image_is_422(app, client, auth, phantom_data) -> None:
    content, _ = phantom_slices(phantom_data, 1)[0]
    assert_error(api_predict(client, auth, [(content[:200], "cut.png")]), 422, "cut.png")


def test_no_model_is_503(app_without_bundle, phantom_data) -> None:
    client = app_without_bundle.test_client()
    auth = bearer(make_token(app_without_bundle, "write"))
    error = assert_error(api_predict(client, auth, phantom_slices(phantom_data, 1)), 503)
    assert error["code"] == "model_not_loaded"
    assert count_predictions(app_without_bundle) == 0 and stored_files(app_without_bundle) == []


def test_a_failed_prediction_is_500_json_and_stores_nothing(
    app, client, auth, phantom_data, monkeypatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(Predictor, "predict_prepared", broken)
    error = assert_error(api_predict(client, auth, phantom_slices(phantom_data, 1)), 500)
    assert "model exploded" in error["message"] and error["code"] == "prediction_failed"
    assert count_predictions(app) == 0 and stored_files(app) == []


# --- stored predictions ---------------------------------------------------------------------


def test_predictions_are_paged_and_filtered(client, auth, phantom_data) -> None:
    made = api_predict(client, auth, phantom_slices(phantom_data, 3)).get_json()["predictions"]
    first = client.get(f"{API}/predictions?per_page=2", headers=auth).get_json()
    assert (first["page"], first["per_page"], first["pages"], first["total"]) == (1, 2, 2, 3)
    second = client.get(f"{API}/predictions?per_page=2&page=2", headers=auth).get_json()
    ids = [p["id"] for p in first["items"] + second["items"]]
    assert sorted(ids) == sorted(p["id"] for p in made) and len(set(ids)) == 3
    assert first["items"][0]["slice_count"] == 1 and "slices" not in first["items"][0]
    name = made[1]["name"]
    found = client.get(f"{API}/predictions", query_string={"q": name}, headers=auth).get_json()
    assert [p["name"] for p in found["items"]] == [name]
    label = made[0]["label"]
    by_label = client.get(f"{API}/predictions?label={label}", headers=auth).get_json()
    assert {p["label"] for p in by_label["items"]} == {label}
    oldest = client.get(f"{API}/predictions?sort=oldest", headers=auth).get_json()
    assert [p["id"] for p in oldest["items"]] == sorted(p["id"] for p in made)


@pytest.mark.parametrize("query", ["per_page=101", "per_page=0", "page=0", "page=two"])
def test_bad_paging_is_400(client, auth, query) -> None:
    assert_error(client.get(f"{API}/predictions?{query}", headers=auth), 400)


@pytest.mark.parametrize(
    ("query", "accepts"),
    [
        ("label=stroke", "label must be one of Normal, Stroke; got 'stroke'"),
        ("uncertain=true", "uncertain must be one of yes, no; got 'true'"),
        ("review=xyz", "review must be one of agree, disagree, none; got 'xyz'"),
        ("since=yesterday", "since must be a date as YYYY-MM-DD; got 'yesterday'"),
        ("until=2026-02-30", "until must be a date as YYYY-MM-DD; got '2026-02-30'"),
        ("sort=random", "sort must be one of newest, oldest, score_high, score_low, name"),
    ],
)
def test_bad_filter_values_are_400_naming_what_they_accept(client, auth, query, accepts) -> None:
    assert_error(client.get(f"{API}/predictions?{query}", headers=auth), 400, accepts)


def test_the_filters_accept_exactly_what_the_openapi_document_declares(client, auth) -> None:
    doc = client.get(f"{API}/openapi.json").get_json()
    parameters = doc["paths"]["/predictions"]["get"]["parameters"]
    assert {p["name"] for p in parameters} == {"page", "per_page"} | set(
        Filters.__dataclass_fields__
    )
    checked = set()
    for parameter in parameters:
        name, schema = parameter["name"], parameter["schema"]
        if "enum" in schema:
            good, bad = schema["enum"], [f"{schema['enum'][0]}x", schema["enum"][0].upper()]
        elif schema.get("format") == "date":
            good, bad = ["2024-02-29", "9999-12-31", "0001-01-01"], ["2023-02-29", "today"]
        else:
            continue
        for value in good:
            response = client.get(f"{API}/predictions", query_string={name: value}, headers=auth)
            assert response.status_code == 200, (name, value)
        for value in bad:
            response = client.get(f"{API}/predictions", query_string={name: value}, headers=auth)
            assert_error(response, 400, name)
        checked.add(name)
    assert checked == {"label", "uncertain", "review", "since", "until", "sort"}


def test_missing_predictions_are_404(client, auth) -> None:
    for response in (
        client.get(f"{API}/predictions/999", headers=auth),
        client.get(f"{API}/predictions/999/cam.png", headers=auth),
        client.delete(f"{API}/predictions/999", headers=auth),
    ):
        assert_error(response, 404, "999")


def test_cam_errors(client, auth, phantom_data) -> None:
    url = api_predict(client, auth, phantom_slices(phantom_data, 1)).headers["Location"]
    assert_error(client.get(f"{url}/cam.png?method=nope", headers=auth), 409, "gradcam")
    assert_error(client.get(f"{url}/cam.png?slice=3", headers=auth), 404)
    assert_error(client.get(f"{url}/cam.png?slice=-1", headers=auth), 400)


def test_a_heat_map_without_a_model_is_503_as_everywhere(app, client, auth, phantom_data) -> None:
    from webapp.bundles import store

    url = api_predict(client, auth, phantom_slices(phantom_data, 1)).headers["Location"]
    files = stored_files(app)
    app.extensions[store.KEY] = (None, "bundle 'tiny' was removed")
    error = assert_error(client.get(f"{url}/cam.png", headers=auth), 503, "was removed")
    assert error["code"] == "model_not_loaded" and stored_files(app) == files


def test_delete_removes_the_row_and_its_files(app, client, auth, phantom_data) -> None:
    made = api_predict(client, auth, phantom_slices(phantom_data, 1), cam="true")
    url = made.headers["Location"]
    assert len(stored_files(app)) == 2  # the slice and its cached heat map
    response = client.delete(url, headers=auth)
    assert response.status_code == 204 and response.data == b""
    assert count_predictions(app) == 0 and stored_files(app) == []
    assert_error(client.get(url, headers=auth), 410, "was deleted")


# --- models, metrics, operating points ------------------------------------------------------


def test_models_list_and_detail(client, auth, bundle_dir) -> None:
    listed = client.get(f"{API}/models", headers=auth).get_json()
    [entry] = listed["items"]
    assert entry["id"] == listed["active_id"] == bundle_id(bundle_dir) and entry["active"]
    assert entry["synthetic_only"] is True  # the tiny bundle is trained on phantoms
    detail = client.get(entry["url"], headers=auth).get_json()
    assert detail["active"] and detail["card"]["backbone"] and "metrics" not in detail["card"]
    assert detail["card"]["synthetic_only"] is True
    assert detail["metrics"] == load_bundle(bundle_dir / "tiny").metrics
    for level in ("slice", "patient"):
        points = detail["operating_points"][level]
        assert points["active"]["name"] == "youden" and points["active"]["source"] == "bundle"
        assert {p["name"] for p in points["bundle"]} >= {"youden", "specificity_0.90"}
        assert points["saved"] == []
    assert_error(client.get(f"{API}/models/0000000000000000", headers=auth), 404)


def _oof_rows(bundle_dir: Path) -> tuple[list[int], list[float]]:
    with (bundle_dir / "tiny" / "oof.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [int(r["label"]) for r in rows], [float(r["probability"]) for r in rows]


def test_metrics_at_a_threshold_match_the_oof_file(client, auth, bundle_dir) -> None:
    url = f"{API}/models/{bundle_id(bundle_dir)}/metrics"
    labels, scores = _oof_rows(bundle_dir)
    for threshold in (0.43, 0.469, 0.5):
        body = client.get(f"{url}?threshold={threshold}", headers=auth).get_json()
        assert body["level"] == "slice"
        expected = metrics.at_threshold(labels, scores, threshold)
        figures = body["metrics"]
        assert {k: figures[k] for k in expected} == pytest.approx(expected)
        assert figures["n"] == len(labels) and "at_prevalence" not in figures

    patient = client.get(f"{url}?threshold=0.469&level=patient&prevalence=0.1", headers=auth)
    figures = patient.get_json()["metrics"]
    scored = oof.oof_scores(load_bundle(bundle_dir / "tiny"), "patient")
    expected = metrics.at_threshold(scored.labels, scored.scores, 0.469)
    assert {k: figures[k] for k in expected} == pytest.approx(expected)
    assert figures["at_prevalence"]["prevalence"] == 0.1 and figures["n"] == scored.labels.size


@pytest.mark.parametrize(
    ("query", "message"),
    [("", "give threshold"), ("threshold=1.2", "[0, 1]"), ("threshold=x", "number"),
     ("threshold=0.5&level=organ", "slice or patient"),
     ("threshold=0.5&prevalence=1", "prevalence"), ("threshold=0.5&prevalence=0", "prevalence"),
     ("threshold=0.5&prevalence=1.5", "prevalence"), ("threshold=0.5&prevalence=x", "prevalence")],
)  # fmt: skip
def test_bad_metrics_requests_are_400(client, auth, bundle_dir, query, message) -> None:
    url = f"{API}/models/{bundle_id(bundle_dir)}/metrics?{query}"
    assert_error(client.get(url, headers=auth), 400, message)


def test_save_and_activate_operating_points(app, client, auth, bundle_dir, phantom_data) -> None:
    model_url = f"{API}/models/{bundle_id(bundle_dir)}"
    body = {"name": "screening", "threshold": 0.0, "level": "slice", "activate": True}
    saved = client.post(f"{model_url}/operating-points", json=body, headers=auth)
    assert saved.status_code == 201, saved.get_json()
    record = saved.get_json()
    assert record["name"] == "screening" and record["active"] and record["source"] == "deployment"
    assert record["metrics"]["threshold"] == 0.0 and record["created_by"].startswith("api token")
    detail = client.get(model_url, headers=auth).get_json()["operating_points"]["slice"]
    assert detail["active"] == {**detail["active"], "name": "screening", "source": "deployment"}
    made = api_predict(client, auth, phantom_slices(phantom_data, 1)).get_json()
    assert made["operating_point"] == "screening" and made["label"] == "Stroke"

    assert_error(client.post(f"{model_url}/operating-points", json=body, headers=auth), 409)
    own = {**body, "name": "youden"}
    assert_error(client.post(f"{model_url}/operating-points", json=own, headers=auth), 409)

    adopted = client.post(
        f"{model_url}/operating-points/specificity_0.90/activate",
        json={"level": "slice"}, headers=auth,
    )  # fmt: skip
    assert adopted.status_code == 200 and adopted.get_json()["active"]
    assert adopted.get_json()["policy"] != "saved"
    again = client.post(
        f"{model_url}/operating-points/screening/activate", json={"level": "slice"}, headers=auth
    )
    assert again.status_code == 200 and again.get_json()["name"] == "screening"
    with app.app_context():
        active = db.session.scalars(
            db.select(OperatingPointRecord).where(OperatingPointRecord.active.is_(True))
        ).all()
        assert [r.name for r in active] == ["screening"]
    missing = client.post(
        f"{model_url}/operating-points/nope/activate", json={"level": "slice"}, headers=auth
    )
    assert_error(missing, 404, "youden")


def test_a_bundle_point_made_active_is_named_once_in_errors(client, auth, bundle_dir, phantom_data):
    """Activating youden copies it into the deployment's records; it is still one point."""
    model_url = f"{API}/models/{bundle_id(bundle_dir)}"
    adopted = client.post(
        f"{model_url}/operating-points/youden/activate", json={"level": "slice"}, headers=auth
    )
    assert adopted.status_code == 200
    for response in (
        api_predict(client, auth, phantom_slices(phantom_data, 1), operating_point="nope"),
        client.post(
            f"{model_url}/operating-points/nope/activate", json={"level": "slice"}, headers=auth
        ),
    ):
        message = response.get_json()["error"]["message"]
        assert message.count("youden") == 1, message
        assert "max_f1" in message


def test_saved_points_can_be_deleted_but_not_the_active_or_the_bundles_own(
    app, client, auth, bundle_dir, phantom_data
) -> None:
    model_url = f"{API}/models/{bundle_id(bundle_dir)}"
    points_url = f"{model_url}/operating-points"
    for name, activate in (("screening", True), ("spare", False)):
        body = {"name": name, "threshold": 0.0, "level": "slice", "activate": activate}
        assert client.post(points_url, json=body, headers=auth).status_code == 201
    made = api_predict(client, auth, phantom_slices(phantom_data, 1)).get_json()
    assert made["operating_point"] == "screening"

    gone = client.delete(f"{points_url}/spare?level=slice", headers=auth)
    assert gone.status_code == 204 and gone.get_data() == b""
    saved = client.get(model_url, headers=auth).get_json()["operating_points"]["slice"]["saved"]
    assert [p["name"] for p in saved] == ["screening"]
    assert_error(client.delete(f"{points_url}/spare?level=slice", headers=auth), 404, "spare")
    assert_error(
        client.delete(f"{points_url}/screening?level=slice", headers=auth),
        409,
        "make another active first",
    )
    assert_error(client.delete(f"{points_url}/youden?level=slice", headers=auth), 400, "own")
    assert_error(client.delete(f"{points_url}/screening", headers=auth), 400, "level")
    reader = bearer(make_token(app, "read"))
    assert_error(client.delete(f"{points_url}/screening?level=slice", headers=reader), 403)

    client.post(f"{points_url}/youden/activate", json={"level": "slice"}, headers=auth)
    assert client.delete(f"{points_url}/screening?level=slice", headers=auth).status_code == 204
    kept = client.get(f"{API}/predictions/{made['id']}", headers=auth).get_json()
    assert kept["operating_point"] == "screening"  # a result keeps the name it was made with
    again = {"name": "screening", "threshold": 0.2, "level": "slice"}
    assert client.post(points_url, json=again, headers=auth).status_code == 201
    with app.app_context():
        deleted = db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.action == "operating_point")
        ).all()
        assert [e.detail.get("deleted") for e in deleted if "deleted" in e.detail] == [
            "spare",
            "screening",
        ]
        assert all(e.actor.startswith("api token") for e in deleted)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "a", "threshold": 1.5, "level": "slice"}, "[0, 1]"),
        ({"name": "a", "threshold": True, "level": "slice"}, "number"),
        ({"name": "a", "threshold": 0.5, "level": "organ"}, "slice or patient"),
        ({"name": "", "threshold": 0.5, "level": "slice"}, "name"),
        ({"name": 3, "threshold": 0.5, "level": "slice"}, "name"),
        ({"name": "a", "threshold": 0.5, "level": "slice", "activate": "yes"}, "activate"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_bad_operating_point_requests_are_400(client, auth, bundle_dir, body, message) -> None:
    url = f"{API}/models/{bundle_id(bundle_dir)}/operating-points"
    assert_error(client.post(url, json=body, headers=auth), 400, message)
    assert_error(client.post(f"{url}/youden/activate", headers=auth), 400, "JSON object")


# --- health, errors, the OpenAPI document ---------------------------------------------------


def test_health(app, client, bundle_dir) -> None:
    response = client.get(f"{API}/health")
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert body["model_loaded"] and body["database"] and body["bundle_id"] == bundle_id(bundle_dir)
    assert body["version"] not in ("", "unknown")


def test_health_is_503_without_a_model_or_a_database(app_without_bundle, monkeypatch) -> None:
    client = app_without_bundle.test_client()
    response = client.get(f"{API}/health")
    body = response.get_json()
    assert response.status_code == 503 and body["status"] == "degraded"
    assert not body["model_loaded"] and body["database"] and body["bundle_id"] is None

    def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("unable to open database file"))

    monkeypatch.setattr(db.session, "execute", down)
    assert client.get(f"{API}/health").get_json()["database"] is False


def test_unknown_paths_and_wrong_methods_answer_json(client, auth) -> None:
    assert_error(client.get(f"{API}/nothing-here", headers=auth), 404)
    assert_error(client.get(f"{API}/predictions/abc", headers=auth), 404)
    assert_error(client.put(f"{API}/predict", headers=auth), 405)
    assert_error(client.get(f"{API}/predict", headers=auth), 405)


def _api_routes(app: Flask) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(f"{API}/"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule.removeprefix(API))
            methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
            routes.setdefault(path, set()).update(methods)
    return routes


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_openapi_document_describes_exactly_the_routes(app, client) -> None:
    response = client.get(f"{API}/openapi.json")  # no token needed
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.0.") and doc["servers"] == [{"url": API}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    documented = {
        path: {method for method in item if method in HTTP_METHODS}
        for path, item in doc["paths"].items()
    }
    assert documented == _api_routes(app)
    for ref in _refs(doc):
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref

    for path, item in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)
            assert "Error" in str(operation["responses"]) or operation.get("security") == []
            url = API + path.format(prediction_id=1, bundle_id="x", name="x", job_id="x")
            anonymous = client.open(url, method=method.upper())
            anonymous.close()
            needs_token = operation.get("security") != []
            assert (anonymous.status_code == 401) == needs_token, (path, method)
            assert ("401" in operation["responses"]) == needs_token


def _poll(client: FlaskClient, headers: dict[str, str], url: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(url, headers=headers).get_json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_wait_false_answers_at_once_and_the_job_gives_the_same_results(
    app, client, auth, phantom_data
) -> None:
    files = phantom_slices(phantom_data, 3)
    now = api_predict(client, auth, files, study="true")
    assert now.status_code == 201

    later = api_predict(client, auth, files, study="true", wait="false")
    assert later.status_code == 202, later.get_data(as_text=True)
    job = later.get_json()
    assert later.headers["Location"] == job["url"] == f"{API}/jobs/{job['id']}"
    assert job["mode"] == "study" and job["total"] == 3 and job["predictions"] == []
    assert job["status"] in ("queued", "running", "done")

    job = _poll(client, auth, job["url"])
    assert job["status"] == "done" and job["done"] == 3 and job["error"] is None
    [made] = job["predictions"]
    stored = client.get(made["url"], headers=auth).get_json()
    assert stored["job_id"] == job["id"] and stored["kind"] == "study"
    assert stored["score"] == pytest.approx(now.get_json()["score"], abs=1e-6)

    assert_error(client.get(f"{API}/jobs/{'0' * 32}", headers=auth), 404, "there is no job")
    reader = bearer(make_token(app, "read"))
    assert client.get(job["url"], headers=reader).status_code == 200
    assert api_predict(client, reader, files, wait="false").status_code == 403


def test_wait_false_refuses_cam_and_bad_values_and_stores_nothing(
    app, client, auth, phantom_data
) -> None:
    files = phantom_slices(phantom_data, 1)
    assert_error(api_predict(client, auth, files, wait="false", cam="true"), 400, "wait=true")
    assert_error(api_predict(client, auth, files, wait="later"), 400, "wait must be true or")
    assert count_predictions(app) == 0 and stored_files(app) == []
