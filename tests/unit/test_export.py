"""ml.infer.onnx: ONNX fold models match torch, never change the bundle's identity, never go
stale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ml.bundle import load_bundle
from ml.infer.onnx import export_matches
from ml.infer.predictor import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(exported_bundle: Path) -> Path:
    return exported_bundle


def test_export_is_checked_against_torch_on_real_inputs(exported: Path) -> None:
    manifest = json.loads((exported / "onnx" / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["fold_1.onnx", "fold_2.onnx", "fold_3.onnx"]
    assert manifest["max_abs_probability_difference"] <= 1e-4
    assert manifest["max_abs_logit_difference"] >= manifest["max_abs_probability_difference"] / 4
    assert "slices from data" in manifest["checked_on"]


def test_export_keeps_the_bundle_id_and_auto_picks_onnx(
    exported: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    assert load_bundle(exported).id == load_bundle(tiny_bundle).id
    assert export_matches(load_bundle(exported))
    onnx_only = tmp_path / "onnx-only"
    shutil.copytree(exported, onnx_only, ignore=shutil.ignore_patterns("openvino"))
    assert Predictor.from_bundle(onnx_only).backend == "onnx"


def test_onnx_and_torch_predictions_agree(exported: Path, phantom_data: Path) -> None:
    paths = sorted(phantom_data.rglob("*.png"))[:6]
    onnx = Predictor.from_bundle(exported, backend="onnx").predict(paths)
    torch_ = Predictor.from_bundle(exported, backend="torch").predict(paths)
    for a, b in zip(onnx, torch_, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-5)
        assert a.fold_probabilities == pytest.approx(b.fold_probabilities, abs=1e-5)


def test_a_damaged_or_stale_export_is_not_used(exported: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    with (damaged / "onnx" / "fold_2.onnx").open("ab") as handle:
        handle.write(b"\0")
    assert not export_matches(load_bundle(damaged))
    assert Predictor.from_bundle(damaged).backend == "torch"
    stale = tmp_path / "stale"
    shutil.copytree(exported, stale)
    manifest = json.loads((stale / "onnx" / "manifest.json").read_text())
    manifest["weights"]["fold_1.safetensors"] = "0" * 64  # made from other weights
    (stale / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    assert not export_matches(load_bundle(stale))
