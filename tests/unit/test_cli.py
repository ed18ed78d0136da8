"""`python -m ml`: documented options, readable errors, info and audit on real bundles."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml.cli.main import build_parser, main, parse_class_map
from ml.config import TrainConfig
from ml.runtime import find_tcmalloc

REPO = Path(__file__).resolve().parents[2]


def test_train_help_documents_every_config_field() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for field in dataclasses.fields(TrainConfig):
        assert field.name in text
    flags = ("--data", "--preset", "--out", "--holdout-frac", "--resume", "--strict", "--split")
    assert all(flag in text for flag in flags)


def test_help_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ml", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "not for clinical use" in " ".join(done.stdout.split())
    assert all(cmd in done.stdout for cmd in ("train", "audit", "info", "synth"))


def test_class_map_parsing() -> None:
    assert parse_class_map("Normal=0, Bleeding=1,Ischemia=1") == {
        "Normal": 0,
        "Bleeding": 1,
        "Ischemia": 1,
    }
    with pytest.raises(ValueError, match="NAME=0 or NAME=1"):
        parse_class_map("Normal=2")


def test_user_errors_print_a_sentence_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        ["train", "--data", str(tmp_path / "nowhere"), "--preset", "test", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "neither a dataset folder nor a .csv manifest" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # a failed start leaves nothing that blocks a retry
    assert main(["info", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_info_prints_the_card(tiny_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "test_efficientnet" in out and "OOF patient ROC-AUC" in out
    assert "leakage audit passed: True" in out


def test_info_gives_each_source_its_own_figures(
    slice_label_bundle: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["info", str(slice_label_bundle)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((slice_label_bundle / "metrics.json").read_text())
    folder = metrics["by_source"]["folder"]
    assert "OOF slice ROC-AUC" in out and "(every source pooled)" in out
    assert f"folder: slice {folder['slice']['roc_auc']:.3f} (95% CI" in out
    assert f"folder: patient {folder['patient']['roc_auc']:.3f}" in out
    assert "site: all its patients have one label" in out  # slice level only, said so
    assert "Patient score: " in out and "source folder:" in out  # the rule, the labels


def test_audit_reports_without_training(
    phantom_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        ["audit", "--data", str(phantom_data), "--preset", "test", "--holdout-frac", "0.2",
         "--cache-dir", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert '"patients_in_several_parts": 0' in out and '"holdout"' in out
    assert not list(tmp_path.glob("fold_*"))


def test_missing_hub_weights_stop_before_any_work(
    phantom_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "b3"
    start = time.monotonic()
    code = main(
        ["train", "--data", str(phantom_data), "--preset", "reference", "--out", str(out),
         "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    assert code == 2
    assert time.monotonic() - start < 15
    assert "--pretrained-file" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_predict_prints_json_for_slices_and_studies(
    tiny_bundle: Path, phantom_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    for k in (10, 2, 1):  # one patient's slices; natural order is 1, 2, 10
        (study / f"7 ({k}).png").write_bytes(
            (phantom_data / f"Stroke/7 ({k % 4 + 1}).png").read_bytes()
        )
    code = main(
        ["predict", "--bundle", str(tiny_bundle), str(study), "--study", "--json",
         "--cam", str(tmp_path / "cams"), "--backend", "torch"]
    )  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["order_by"] == "file_name"
    assert [s["name"] for s in result["slices"]] == ["7 (1).png", "7 (2).png", "7 (10).png"]
    assert len(list((tmp_path / "cams").glob("*.png"))) == 3
    assert all("drop_top" in entry for entry in result["cam"])
    assert main(["predict", "--bundle", str(tiny_bundle), str(tmp_path / "none.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_text_file_named_png_is_a_clear_error(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fake = tmp_path / "scan.png"
    fake.write_text("not an image")
    assert main(["predict", "--bundle", str(tiny_bundle), str(fake)]) == 2
    assert "not a PNG, JPEG or DICOM" in capsys.readouterr().err


@pytest.mark.skipif(find_tcmalloc() is None, reason="libtcmalloc-minimal4 is not installed")
def test_the_cli_runs_under_tcmalloc_unless_told_not_to(tiny_bundle: Path) -> None:
    import os

    def allocator(extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | extra
        done = subprocess.run(
            [sys.executable, "-m", "ml", "info", str(tiny_bundle)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return done.stdout.split("memory allocator of this process: ")[1].split()[0]

    assert allocator({}) == "tcmalloc"
    assert allocator({"ML_NO_TCMALLOC": "1"}) == "default"
