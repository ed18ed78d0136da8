"""ml.infer.openvino: precisions checked on out-of-fold slices before use, refused when they fail,
falling back (and saying so) when the CPU, the process or the bundle cannot run them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from ml.bundle import load_bundle
from ml.infer import openvino as ov_backend
from ml.infer import predictor as predictor_module
from ml.infer.openvino_export import (
    CONVOLUTIONS,
    FLOAT_STAGES,
    LIMITS,
    judge,
    resolved_auc_diff,
    split_early_stages,
)
from ml.infer.predictor import Predictor
from ml.models.network import StrokeNet, early_stages
from ml.runtime import may_run_openvino

pytestmark = pytest.mark.slow
ALL = frozenset({"f32", "bf16", "mixed", "int8"})


@pytest.fixture(scope="module")
def exported(exported_bundle: Path) -> Path:
    return exported_bundle


@pytest.fixture
def edited(exported: Path, tmp_path: Path):
    """A copy of the exported bundle whose OpenVINO checks and timings a test rewrites."""

    def edit(checks: dict, timings: dict | None = None) -> Path:
        copy = tmp_path / "edited"
        shutil.copytree(exported, copy)
        path = copy / "openvino" / "manifest.json"
        manifest = json.loads(path.read_text())
        for precision, passed in checks.items():
            manifest["checks"][precision].update(passed=passed, failures=[] if passed else ["x"])
        manifest["ms_per_slice"].update(timings or {})
        path.write_text(json.dumps(manifest))
        return copy

    return edit


@pytest.fixture
def cpu(monkeypatch):
    """Pretend the CPU runs these precisions natively (the capability, not the arithmetic)."""

    def set_to(precisions) -> None:
        monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda: frozenset(precisions))

    set_to(ALL)
    return set_to


def test_each_precision_is_checked_on_the_out_of_fold_slices(exported: Path) -> None:
    manifest = json.loads((exported / "openvino" / "manifest.json").read_text())
    rows = (exported / "oof.csv").read_text().strip().splitlines()[1:]
    assert set(manifest["checks"]) == ALL
    for check in manifest["checks"].values():
        assert check["slices"] == len(rows)  # every OOF slice, each by its own fold model
        assert {"max_prob_diff", "roc_auc_diff", "flips", "passed"} <= set(check)
    f32 = manifest["checks"]["f32"]
    assert f32["passed"] and f32["max_prob_diff"] < 1e-4 and f32["flips"] == 0
    assert "out-of-fold slices" in manifest["checked_on"]
    assert sorted(manifest["files"]) == sorted(
        f"fold_{k}.{variant}.{ext}"
        for k in (1, 2, 3)
        for variant in ("int8", "mixed_early", "mixed_late")
        for ext in ("bin", "xml")
    )
    assert {"torch/f32", "onnx/f32", "openvino/f32"} <= set(manifest["ms_per_slice"])
    assert load_bundle(exported).card()["inference"]["checks"] == manifest["checks"]


def test_int8_keeps_the_first_stages_in_float32(exported: Path) -> None:
    import openvino as ov

    model = Predictor.from_bundle(exported, backend="torch").torch_models()[0]
    early = [
        m
        for stage in early_stages(model.backbone, FLOAT_STAGES)
        for m in stage.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    manifest = json.loads((exported / "openvino" / "manifest.json").read_text())
    assert manifest["checks"]["int8"]["float_convolutions"] == len(early)
    quantised = ov.Core().read_model(str(exported / "openvino" / "fold_1.int8.xml"))
    convolutions = [op for op in quantised.get_ordered_ops() if op.get_type_name() in CONVOLUTIONS]
    fed_int8 = [
        conv.input_value(0).get_node().get_type_name() == "FakeQuantize" for conv in convolutions
    ]
    assert not any(fed_int8[: len(early)])
    assert all(fed_int8[len(early) :])


def test_openvino_float32_matches_torch(exported: Path, phantom_data: Path, cpu) -> None:
    paths = sorted(phantom_data.rglob("*.png"))[:6]
    ours = Predictor.from_bundle(exported, backend="openvino", precision="f32")
    assert ours.runtime == {"backend": "openvino", "precision": "f32"}
    reference = Predictor.from_bundle(exported, backend="torch").predict(paths)
    for a, b in zip(ours.predict(paths), reference, strict=True):
        assert a.fold_probabilities == pytest.approx(b.fold_probabilities, abs=1e-5)


@pytest.mark.parametrize("head", ["pooled", "lesion_map"])
def test_the_two_mixed_parts_chained_are_the_whole_model(head: str) -> None:
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", num_classes=0)
    model = StrokeNet(net, 8, head=head, lesion_layer="stride16").eval()
    early, late = split_early_stages(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(late(early(x)), model(x), atol=1e-6)
    fused = StrokeNet(
        timm.create_model("test_efficientnet", num_classes=0),
        8,
        head="lesion_map",
        lesion_layer="stride8",
    )
    with pytest.raises(ValueError, match="stride-8 lesion map"):
        split_early_stages(fused)
    resnet = StrokeNet(timm.create_model("test_resnet", num_classes=0), 8)
    with pytest.raises(ValueError, match="EfficientNet"):
        split_early_stages(resnet)


def test_mixed_runs_its_first_part_in_float32(edited, phantom_data: Path, cpu) -> None:
    bundle = edited({"mixed": True})
    ours = Predictor.from_bundle(bundle, backend="openvino", precision="mixed")
    chains = ours._openvino()
    assert all(isinstance(c, ov_backend.Chain) for c in chains)
    import openvino as ov

    assert {c.first.get_property("INFERENCE_PRECISION_HINT") for c in chains} == {ov.Type.f32}
    paths = sorted(phantom_data.rglob("*.png"))[:4]
    reference = Predictor.from_bundle(bundle, backend="torch").predict(paths)
    checked = json.loads((bundle / "openvino" / "manifest.json").read_text())["checks"]["mixed"]
    for a, b in zip(ours.predict(paths), reference, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=checked["max_prob_diff"] + 0.02)


def test_auto_takes_the_fastest_precision_that_passed(edited, cpu) -> None:
    timings = {"onnx/f32": 50.0, "openvino/f32": 30.0, "openvino/bf16": 20.0}
    bundle = edited({"f32": True, "bf16": True, "int8": False}, {**timings, "openvino/int8": 1.0})
    predictor = Predictor.from_bundle(bundle)
    assert (predictor.backend, predictor.precision) == ("openvino", "bf16")  # int8 failed
    cpu({"f32", "int8"})  # no bf16 here: the next fastest that passed
    assert Predictor.from_bundle(bundle).precision == "f32"


def test_auto_keeps_onnx_when_it_measured_faster(edited, cpu) -> None:
    bundle = edited({"f32": True}, {"onnx/f32": 5.0, "openvino/f32": 30.0})
    assert Predictor.from_bundle(bundle).backend == "onnx"


def test_a_precision_that_failed_its_check_is_refused(edited, cpu) -> None:
    bundle = edited({"int8": False})
    with pytest.raises(ov_backend.PrecisionRefused, match="int8 failed its check"):
        Predictor.from_bundle(bundle, backend="openvino", precision="int8")


def test_a_cpu_without_bf16_falls_back_to_float32_and_says_so(edited, cpu) -> None:
    cpu({"f32", "int8"})
    predictor = Predictor.from_bundle(edited({"bf16": True}), precision="bf16")
    assert (predictor.backend, predictor.precision) == ("openvino", "f32")
    assert "no native bf16" in predictor.backend_note
    assert predictor.runtime["backend_note"] == predictor.backend_note


def test_a_cpu_with_bf16_runs_it(edited, cpu) -> None:
    predictor = Predictor.from_bundle(edited({"bf16": True}), precision="bf16")
    assert (predictor.precision, predictor.backend_note) == ("bf16", None)


def test_old_bundles_fall_back_and_say_so(tiny_bundle: Path, cpu) -> None:
    assert load_bundle(tiny_bundle).card()["inference"] is None
    assert Predictor.from_bundle(tiny_bundle).runtime == {"backend": "torch", "precision": "f32"}
    asked = Predictor.from_bundle(tiny_bundle, backend="openvino")
    assert asked.backend == "torch"
    assert "no OpenVINO export" in asked.backend_note


def test_stale_or_damaged_variants_are_never_used(exported: Path, tmp_path: Path, cpu) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    with (damaged / "openvino" / "fold_2.int8.bin").open("ab") as handle:
        handle.write(b"\0")
    assert ov_backend.read_manifest(load_bundle(damaged)) is None
    assert Predictor.from_bundle(damaged, backend="openvino").backend != "openvino"


def test_no_openvino_beside_tcmalloc_or_when_not_installed(exported, monkeypatch, cpu) -> None:
    monkeypatch.setattr(predictor_module, "allocator", lambda: "tcmalloc")
    beside = Predictor.from_bundle(exported, backend="openvino", precision="f32")
    assert beside.backend == "onnx" and "tcmalloc" in beside.backend_note
    assert Predictor.from_bundle(exported).backend_note is None  # auto: nothing was asked
    monkeypatch.setattr(predictor_module, "allocator", lambda: "default")
    monkeypatch.setattr(ov_backend, "installed", lambda: False)
    missing = Predictor.from_bundle(exported, backend="openvino")
    assert missing.backend == "onnx" and "not installed" in missing.backend_note


def test_commands_that_may_run_openvino_keep_the_default_allocator(exported: Path) -> None:
    assert may_run_openvino(["export", "b"])
    assert may_run_openvino(["predict", "--bundle", str(exported), "x.png"])
    assert not may_run_openvino(["predict", "--bundle", str(exported), "--backend", "torch"])
    assert not may_run_openvino(["train", "--data", "d"])
    assert not may_run_openvino(["predict", "--bundle", str(exported.parent / "none"), "x"])


def test_the_check_counts_flips_and_names_each_failure() -> None:
    labels = np.array([0, 0, 1, 1])
    torch_probs = np.array([0.1, 0.49, 0.51, 0.9])
    same = judge(torch_probs, torch_probs + 1e-6, labels, 0.5, LIMITS)
    assert same["passed"] and same["flips"] == 0 and same["roc_auc_diff"] == 0
    flipped = judge(torch_probs, np.array([0.1, 0.52, 0.48, 0.9]), labels, 0.5, LIMITS)
    assert not flipped["passed"] and flipped["flips"] == 2
    assert any("change label" in f for f in flipped["failures"])
    assert any("ROC-AUC moves" in f for f in flipped["failures"])
    far = judge(torch_probs, torch_probs + 0.2 * np.array([-0.1, -1, 1, 0.1]), labels, 0.5, LIMITS)
    assert any("probability differs by up to 0.2" in f for f in far["failures"])


def test_reordering_scores_torch_left_tied_is_not_a_ranking_failure() -> None:
    """Random weights score every slice within a hair of the others: rounding reorders them,
    which says nothing about the variant. Pairs torch separated still count in full."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    tied = 0.3 + rng.uniform(0, 2e-4, 400)  # all within the tie margin
    noisy = tied + rng.normal(0, 5e-5, 400)
    check = judge(tied, noisy, labels, 0.5, LIMITS)
    assert abs(check["roc_auc_diff"]) > LIMITS["max_auc_diff"]  # the plain difference is large
    assert check["roc_auc_diff_resolved"] == 0.0 and check["passed"]
    spread = rng.uniform(0, 1, 400)
    swapped = spread + np.where(labels == 1, -0.04, 0.04)  # within the probability limit
    check = judge(spread, swapped, labels, 0.99, LIMITS)
    assert check["roc_auc_diff_resolved"] < -LIMITS["max_auc_diff"] and not check["passed"]
    assert any("ROC-AUC moves" in f for f in check["failures"])


def test_with_no_margin_the_resolved_difference_is_the_roc_auc_difference() -> None:
    from ml.metrics.scores import roc_auc

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 700)  # more positives than one chunk of pairs
    expected = np.round(rng.uniform(0, 1, 700), 2)  # with ties
    got = np.round(expected + rng.normal(0, 0.05, 700), 2)
    plain = roc_auc(labels, got) - roc_auc(labels, expected)
    assert resolved_auc_diff(labels, expected, got, margin=-1.0) == pytest.approx(plain)
