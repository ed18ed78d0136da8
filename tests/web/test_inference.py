"""What computes the numbers: recorded with every result, shown on the model card, and a heat map
being made holds up predictions only when both use the same torch models."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from ml import load_bundle
from tests.web.helpers import phantom_slices, upload
from webapp.bundles.store import explaining, using_predictor
from webapp.extensions import db
from webapp.models import Prediction


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
