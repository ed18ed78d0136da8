"""ml.infer.predictor: the ensemble predictor reproduces training, batches, orders studies, flags
doubt."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ml.bundle import BundleError, load_bundle, write_manifest
from ml.data.dataset import natural_key
from ml.data.headct import NOT_HEAD_CT
from ml.data.readers import UnreadableImage
from ml.data.synth import write_ct_dicom
from ml.explain import cam
from ml.infer.predictor import Predictor

pytestmark = pytest.mark.slow


def _oof(bundle: Path) -> list[dict[str, str]]:
    with (bundle / "oof.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_fold_model_reproduces_its_stored_oof_probability(
    tiny_bundle: Path, phantom_data: Path
) -> None:
    rows = _oof(tiny_bundle)
    for fold in ("1", "2", "3"):
        row = next(r for r in rows if r["fold"] == fold)
        predictor = Predictor.from_bundle(tiny_bundle, backend="torch", folds=[int(fold)])
        [result] = predictor.predict([phantom_data / row["path"]])
        assert result.probability == pytest.approx(float(row["probability"]), abs=1e-5)


def test_ensemble_is_the_mean_of_its_folds(tiny_bundle: Path, phantom_data: Path) -> None:
    path = next(phantom_data.rglob("*.png"))
    predictor = Predictor.from_bundle(tiny_bundle, backend="torch")
    [result] = predictor.predict([path])
    assert len(result.fold_probabilities) == 3
    assert result.probability == pytest.approx(np.mean(result.fold_probabilities))
    assert result.fold_std == pytest.approx(np.std(result.fold_probabilities))
    singles = [
        Predictor.from_bundle(tiny_bundle, backend="torch", folds=[k]).predict([path])[0]
        for k in (1, 2, 3)
    ]
    assert result.fold_probabilities == pytest.approx([s.probability for s in singles], abs=1e-6)
    assert result.bundle_id == load_bundle(tiny_bundle).id
    assert result.label == ("Stroke" if result.probability >= result.threshold else "Normal")
    assert result.operating_point == "youden"


def test_batch_equals_one_at_a_time_and_bytes_equal_paths(
    tiny_bundle: Path, phantom_data: Path
) -> None:
    paths = sorted(phantom_data.rglob("*.png"))[:5]
    predictor = Predictor.from_bundle(tiny_bundle, backend="torch")
    batch = predictor.predict(paths)
    alone = [predictor.predict([p])[0] for p in paths]
    from_bytes = predictor.predict([p.read_bytes() for p in paths], [p.name for p in paths])
    for a, b, c in zip(batch, alone, from_bytes, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-6)
        assert a.probability == pytest.approx(c.probability, abs=1e-6)
        assert a.name == c.name


def test_views_and_their_aggregation_are_configurable(
    tiny_bundle: Path, phantom_data: Path
) -> None:
    path = next(phantom_data.rglob("*.png"))
    default = Predictor.from_bundle(tiny_bundle, backend="torch")
    identity = Predictor.from_bundle(tiny_bundle, backend="torch", views=["identity"])
    maximum = Predictor.from_bundle(tiny_bundle, backend="torch", view_aggregation="max")
    assert default.views == ("identity", "hflip", "vflip")
    p_default = default.predict([path])[0]
    p_identity = identity.predict([path])[0]
    p_max = maximum.predict([path])[0]
    assert p_identity.view_std == 0.0
    assert p_max.probability >= p_default.probability - 1e-9
    with pytest.raises(ValueError, match="unknown TTA view"):
        Predictor.from_bundle(tiny_bundle, views=["rotate"])
    with pytest.raises(ValueError, match="mean, median, max"):
        Predictor.from_bundle(tiny_bundle, view_aggregation="mode")


def test_operating_point_choice_moves_the_label(tiny_bundle: Path, phantom_data: Path) -> None:
    path = next(phantom_data.rglob("*.png"))
    points = json.loads((tiny_bundle / "thresholds.json").read_text())["points"]
    lowest = min(points, key=lambda p: p["threshold"])
    predictor = Predictor.from_bundle(tiny_bundle, operating_point=lowest["name"])
    [result] = predictor.predict([path])
    assert result.threshold == lowest["threshold"]
    assert result.operating_point == lowest["name"]
    with pytest.raises(ValueError, match="unknown operating point"):
        Predictor.from_bundle(tiny_bundle, operating_point="vibes")


def test_uncertain_flag_follows_the_stored_limits(tiny_bundle: Path, phantom_data: Path) -> None:
    predictor = Predictor.from_bundle(tiny_bundle, backend="torch")
    results = predictor.predict(sorted(phantom_data.rglob("*.png")))
    limits = json.loads((tiny_bundle / "uncertainty.json").read_text())
    for r in results:
        near = abs(r.probability - r.threshold) <= limits["half_width"]
        disagree = r.fold_std > limits["fold_std_limit"]
        assert r.uncertain == (near or disagree)
        assert ("close to the threshold" in r.uncertain_reasons) == near


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_study_orders_dicom_by_position_and_files_by_natural_name(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    predictor = Predictor.from_bundle(tiny_bundle, backend="torch")
    hu = np.full((64, 64), 30.0, dtype=np.float32)
    for number, z in [(3, 30.0), (1, 10.0), (2, 20.0)]:
        write_ct_dicom(
            tmp_path / f"s{number}.dcm", hu + number, patient_id="1", instance_number=number,
            slice_position_mm=z,
        )  # fmt: skip
    files = [tmp_path / "s3.dcm", tmp_path / "s1.dcm", tmp_path / "s2.dcm"]
    study = predictor.predict_study(files)
    assert [s.info["instance_number"] for s in study.slices] == [1, 2, 3]
    assert study.order_by == "slice_position"
    assert study.aggregation == "mean"
    assert study.score == pytest.approx(np.mean([s.probability for s in study.slices]))
    image = _png(np.full((64, 64), 90, np.uint8))
    names = ["7 (10).png", "7 (9).png", "7 (1).png"]
    by_name = predictor.predict_study([image] * 3, names, aggregation="max")
    assert [s.name for s in by_name.slices] == ["7 (1).png", "7 (9).png", "7 (10).png"]
    assert by_name.order_by == "file_name" and by_name.aggregation == "max"
    assert by_name.label == ("Stroke" if by_name.score >= by_name.threshold else "Normal")


def test_natural_key() -> None:
    assert sorted(["a10", "a9", "a1"], key=natural_key) == ["a1", "a9", "a10"]


def test_bad_input_is_refused_before_any_model_runs(tiny_bundle: Path) -> None:
    predictor = Predictor.from_bundle(tiny_bundle, backend="torch")
    with pytest.raises(UnreadableImage, match="not a PNG, JPEG or DICOM"):
        predictor.predict([b"plain text"])
    assert predictor._torch_models is None


def test_onnx_backend_needs_an_export(tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match="python -m ml export"):
        Predictor.from_bundle(tiny_bundle, backend="onnx")
    assert Predictor.from_bundle(tiny_bundle, backend="auto").backend == "torch"


def test_explain_returns_a_map_an_overlay_and_a_faithfulness_figure(
    tiny_bundle: Path, phantom_data: Path
) -> None:
    predictor = Predictor.from_bundle(tiny_bundle, backend="torch")
    explanation = predictor.explain(next(phantom_data.rglob("*.png")), opacity=0.5)
    size = predictor.cfg.image_size
    assert explanation.heatmap.shape == (size, size)
    assert explanation.heatmap.min() >= 0.0 and explanation.heatmap.max() <= 1.0
    assert Image.open(io.BytesIO(explanation.overlay_png)).size == (size, size)
    assert {"drop_top", "drop_random"} <= set(explanation.faithfulness)


def test_a_bundle_from_before_the_cam_layer_setting_keeps_drawing_the_last_stage(
    tiny_bundle: Path, phantom_data: Path, tmp_path: Path
) -> None:
    """Its recorded CAM figures describe the last stage, so its maps must come from there."""
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    assert config.pop("cam_layer") == "stride16"  # what a new bundle draws
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    manifest = json.loads((old / "manifest.json").read_text())
    made = {"bundle_id", "format", "files", "packages"}  # what write_manifest makes again
    write_manifest(old, **{k: v for k, v in manifest.items() if k not in made})
    image = next(phantom_data.rglob("*.png"))
    maps = {}
    for name, path in (("new", tiny_bundle), ("old", old)):
        predictor = Predictor.from_bundle(path, backend="torch")
        maps[name] = (predictor.cfg.cam_layer, predictor.explain(image).heatmap)
    models, x = predictor.torch_models(), predictor.prepare(image).tensor
    assert maps["new"][0] == "stride16" and maps["old"][0] == "last"
    assert np.allclose(maps["old"][1], cam.explain(models, x, views=predictor.views, layer="last"))
    assert not np.allclose(maps["new"][1], maps["old"][1])


def test_an_image_that_is_no_head_ct_is_flagged_not_labelled_with_confidence(
    tiny_bundle: Path, phantom_data: Path
) -> None:
    predictor = Predictor.from_bundle(tiny_bundle, backend="torch")
    blank, phantom = predictor.predict(
        [_png(np.zeros((512, 512), np.uint8)), next(phantom_data.rglob("*.png"))], ["blank", "ok"]
    )
    assert blank.uncertain and NOT_HEAD_CT in blank.uncertain_reasons
    assert blank.input_warning.startswith(NOT_HEAD_CT) and "blank" in blank.input_warning
    assert blank.to_dict()["input_warning"] == blank.input_warning
    assert phantom.input_warning is None and NOT_HEAD_CT not in phantom.uncertain_reasons
