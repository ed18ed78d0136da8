"""What computes the numbers: recorded with every result, shown on the model card, and a heat map
being made holds up predictions only when both use the same torch models."""

from __future__ import annotations

import html
import json
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from ml import load_bundle
from tests.web.helpers import count_predictions, phantom_slices, stored_files, upload
from tests.web.test_api import api_predict, bearer, make_token
from webapp import ConfigurationError, create_app
from webapp.bundles.store import explaining, using_predictor
from webapp.extensions import db
from webapp.models import Job, Prediction
from webapp.predict import preload


@pytest.mark.slow
def test_heat_maps_hold_up_predictions_only_when_they_share_torch_models(
    make_app, bundle_dir: Path, exported_bundle: Path
) -> None:
    shutil.copytree(exported_bundle / "onnx", bundle_dir / "tiny" / "onnx")
    for backend, shares_models in (("onnx", False), ("torch", True)):
        app = make_app(PREDICTOR_BACKEND=backend)
        predicted = threading.Event()

        def predict(app=app, predicted=predicted) -> None:
            with app.app_context(), using_predictor():
                predicted.set()

        with app.app_context(), explaining() as predictor:
            assert predictor.backend == backend
            thread = threading.Thread(target=predict)
            thread.start()
            # while a heat map is being made (the block), a prediction goes ahead or waits
            assert predicted.wait(timeout=3) is not shares_models
        thread.join(timeout=10)
        assert predicted.is_set()


def test_each_result_records_the_backend_and_precision(client, app, phantom_data) -> None:
    response = upload(client, phantom_slices(phantom_data, 1))
    result = client.get(response.headers["Location"]).headers["Location"]
    with app.app_context():
        [stored] = db.session.scalars(select(Prediction)).all()
        assert (stored.preprocessing["backend"], stored.preprocessing["precision"]) == (
            "torch",
            "f32",
        )
    assert "torch backend in f32" in client.get(result).get_data(as_text=True)


def test_the_model_card_shows_each_precision_check(client, bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir / "tiny")
    assert "No OpenVINO export checked" in client.get("/model").get_data(as_text=True)
    check = {"slices": 48, "max_prob_diff": 0.0123, "roc_auc_torch": 0.81, "roc_auc": 0.8,
             "roc_auc_diff": -0.01, "flips": 3}  # fmt: skip
    manifest = {
        "weights": bundle.weight_hashes(),
        "files": {},
        "checks": {
            "f32": {**check, "passed": True, "failures": [], "flips": 0},
            "int8": {**check, "passed": False, "failures": ["3 of 48 slices change label"]},
        },
        "limits": {"max_prob_diff": 0.05, "max_auc_diff": 0.005, "max_flip_share": 0.005},
        "tie_margin": 0.001,
        "threshold": 0.4,
        "checked_on": "48 of the bundle's 48 out-of-fold slices",
        "ms_per_slice": {"torch/f32": 40.0, "onnx/f32": 20.0, "openvino/f32": 12.5},
        "machine": {"cpu": "Test CPU", "threads": 2, "capabilities": ["f32"]},
        "openvino": "2026.4.1-x",
    }
    (bundle.path / "openvino").mkdir()
    (bundle.path / "openvino" / "manifest.json").write_text(json.dumps(manifest))
    page = client.get("/model").get_data(as_text=True)
    table = page.split('id="precision-checks"', 1)[1].split("</table>", 1)[0]
    assert "refused: 3 of 48 slices change label" in table
    assert "0.012" in table and "0 of 48" in table and "12.5" in table
    assert "Test CPU" in page and "over 0.001 apart" in page


def test_the_model_card_and_health_say_what_predicts(client) -> None:
    card = client.get("/model").get_data(as_text=True)
    assert '<p id="running">This server predicts with the torch backend in f32.' in card
    health = client.get("/api/v1/health").get_json()
    assert health["inference"] == {"backend": "torch", "precision": "f32"}


@pytest.mark.slow
def test_a_refused_precision_is_said_everywhere_and_nothing_is_stored(
    make_app, bundle_dir: Path, exported_bundle: Path, phantom_data: Path, monkeypatch
) -> None:
    tiny = bundle_dir / "tiny"
    for folder in ("onnx", "openvino"):
        shutil.copytree(exported_bundle / folder, tiny / folder)
    manifest_path = tiny / "openvino" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    refused = "3 of 48 slices change label at threshold 0.400 (> 0.5%)"
    manifest["checks"]["int8"].update(passed=False, failures=[refused])
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.setattr("ml.infer.predictor.allocator", lambda: "default")  # not tcmalloc
    app = make_app(PREDICTOR_BACKEND="openvino", PREDICTOR_PRECISION="int8")
    client = app.test_client()
    errors: list[str] = []
    monkeypatch.setattr(app.logger, "error", lambda message, *args: errors.append(message % args))
    preload.start(app).join(timeout=60)  # a worker's start: it says why, once, and ends
    assert len(errors) == 1 and "cannot predict" in errors[0] and refused in errors[0]

    health = client.get("/api/v1/health")
    body = health.get_json()
    assert health.status_code == 503 and body["status"] == "degraded"
    assert not body["model_loaded"] and body["inference"] is None
    assert refused in body["model_error"] and str(bundle_dir) not in body["model_error"]
    shown = html.escape(refused)  # as a page writes it
    assert shown in client.get("/model").get_data(as_text=True).split('id="running"')[1]
    assert shown in client.get("/").get_data(as_text=True).split('id="cannot-predict"')[1]

    page = upload(client, phantom_slices(phantom_data, 1))
    assert page.status_code == 503 and shown in page.get_data(as_text=True)
    token = bearer(make_token(app, "read", "write"))
    api = api_predict(client, token, phantom_slices(phantom_data, 1))
    assert api.status_code == 503 and api.get_json()["error"]["code"] == "model_not_loaded"
    assert count_predictions(app) == 0 and stored_files(app) == []
    with app.app_context():
        assert db.session.query(Job).count() == 0


@pytest.mark.parametrize(
    ("key", "value"), [("PREDICTOR_BACKEND", "openvno"), ("PREDICTOR_PRECISION", "bf61")]
)
def test_an_unknown_backend_or_precision_stops_the_app_at_start(key: str, value: str) -> None:
    class Settings:
        TESTING = True

    setattr(Settings, key, value)
    app_folder_had_instance = (Path(__file__).parents[2] / "instance").exists()
    with pytest.raises(ConfigurationError, match=f"{key}='{value}'; choose one of auto"):
        create_app(Settings)
    # a refused start writes nothing (not even the instance folder beside the code)
    assert (Path(__file__).parents[2] / "instance").exists() == app_folder_had_instance
