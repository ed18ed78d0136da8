"""A 2.5D bundle in the web app: study slices are scored and explained with their neighbours."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml.config import make_config
from ml.data.dataset import load_dataset, slice_order
from ml.infer.predictor import Predictor
from tests.web.test_api import api_predict, make_token

pytestmark = pytest.mark.slow


def test_a_study_is_scored_and_explained_with_its_neighbours(
    make_app, bundle_dir: Path, neighbour_bundle: Path, phantom_data: Path
) -> None:
    shutil.copytree(neighbour_bundle, bundle_dir / "neighbours")
    app = make_app(ACTIVE_BUNDLE="neighbours", PREDICTOR_BACKEND="torch")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'read', 'write')}"}
    cfg = make_config("test")
    records = load_dataset(phantom_data, cfg.class_map, cfg.patient_regex).records
    patient = sorted((r for r in records if r.patient_id == records[0].patient_id), key=slice_order)
    files = [(r.path.read_bytes(), r.path.name) for r in reversed(patient)]  # any upload order

    response = api_predict(client, auth, files, study="true", cam="true")
    assert response.status_code == 201
    body = response.get_json()
    assert body["provenance"]["preprocessing"]["input_mode"] == "neighbours_aligned"
    expected = Predictor.from_bundle(neighbour_bundle, backend="torch").predict_study(
        [r.path for r in patient]
    )
    assert [s["name"] for s in body["slices"]] == [r.path.name for r in patient]
    assert [s["probability"] for s in body["slices"]] == pytest.approx(
        [s.probability for s in expected.slices], abs=1e-5
    )
    with client.get(body["slices"][1]["cam_url"], headers=auth) as heat:
        assert heat.status_code == 200 and heat.mimetype == "image/png"
