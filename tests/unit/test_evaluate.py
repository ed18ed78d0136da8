"""What `ml train` and `ml evaluate` write: reports, operating points, calibration, model card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from ml.bundle import load_bundle
from ml.cli.main import main
from ml.evaluate.numbers import interval, number
from ml.evaluate.scored import with_intervals
from ml.metrics import scores as metrics
from ml.metrics.thresholds import read_thresholds

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_stored_operating_points_are_the_oof_metrics(tiny_bundle: Path) -> None:
    rows = _rows(tiny_bundle / "oof.csv")
    y = [int(r["label"]) for r in rows]
    p = [float(r["probability"]) for r in rows]
    points, active = read_thresholds(tiny_bundle / "thresholds.json")
    assert active == "youden"
    assert [pt.policy for pt in points] == [
        "max_f1", "youden", "sensitivity_at", "specificity_at", "min_cost"
    ]  # fmt: skip
    for point in points:
        assert point.metrics == metrics.at_threshold(y, p, point.threshold)
    sensitivity = next(pt for pt in points if pt.policy == "sensitivity_at")
    assert sensitivity.metrics["sensitivity"] >= 0.95
    _, patient_active = read_thresholds(tiny_bundle / "patient_thresholds.json")
    saved = json.loads((tiny_bundle / "metrics.json").read_text())
    assert saved["operating_point"]["slice"] == active
    assert saved["operating_point"]["patient"] == patient_active


def test_oof_report_folder(tiny_bundle: Path) -> None:
    report = tiny_bundle / "report"
    names = ["roc_slice", "roc_patient", "pr_slice", "confusion_slice", "confusion_patient",
             "distribution_slice", "reliability_slice", "thresholds_slice"]  # fmt: skip
    for name in names:
        assert (report / f"{name}.html").is_file()
        with Image.open(report / f"{name}.png") as image:
            assert image.size == (800, 600)
    assert (report / "plotly.min.js").is_file()
    saved = json.loads((report / "metrics.json").read_text())
    bundle_metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert saved["slice"]["roc_auc"] == pytest.approx(bundle_metrics["slice"]["roc_auc"])
    assert saved["calibration"]["evaluated_on"] == "cross-fitted over folds"
    youden = saved["slice"]["operating_points"]["youden"]
    low, high = youden["ci95"]["sensitivity"]
    assert low <= youden["sensitivity"] <= high
    assert len(_rows(report / "predictions.csv")) == 48


def test_wilson_intervals_for_every_rate() -> None:
    out = with_intervals({"tp": 8, "fn": 2, "tn": 5, "fp": 5, "sensitivity": 0.8})
    assert out["ci95"]["sensitivity"] == pytest.approx([0.490, 0.943], abs=1e-3)
    assert out["ci95"]["ppv"] == pytest.approx(list(metrics.wilson_ci(8, 13)))
    assert with_intervals({"tp": 0, "fn": 0, "tn": 3, "fp": 0})["ci95"]["sensitivity"] is None


def test_model_card_says_what_it_is_for_and_how_good_it_is(tiny_bundle: Path) -> None:
    card = (tiny_bundle / "model_card.md").read_text()
    assert "Not for clinical use" in card
    for heading in ("Intended use", "Data", "Split", "Training recipe", "Operating points",
                    "Calibration", "Uncertainty flag", "Known limitations"):  # fmt: skip
        assert f"## {heading}" in card
    assert "Labels are per patient" in card
    calibration = json.loads((tiny_bundle / "calibration.json").read_text())
    assert f"{calibration['oof']['before']['ece']:.3f}" in card
    assert "Normal 24, Stroke 24" in card


def test_model_card_gives_each_operating_point_its_wilson_intervals(tiny_bundle: Path) -> None:
    card = (tiny_bundle / "model_card.md").read_text()
    figures = load_bundle(tiny_bundle).point_figures()
    assert set(figures) == {"slice", "patient"}
    for level, points in figures.items():
        for name, at in points.items():
            cells = [
                f"{number(at[key])} ({interval(at['ci95'][key])})"
                if at["ci95"].get(key)
                else number(at[key])
                for key in ("sensitivity", "specificity", "ppv", "npv")
            ]
            assert f"| {name} | {number(at['threshold'])} | {' | '.join(cells)} |" in card, level


def test_evaluate_an_independent_folder(
    tiny_bundle: Path, phantom_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    code = main(
        ["evaluate", "--bundle", str(tiny_bundle), "--data", str(phantom_data), "--out", str(out),
         "--backend", "torch"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["slice"]["n"] == 48 and saved["patient"]["n"] == 12
    # These phantoms are the bundle's own training data, and the report says so.
    assert saved["seen_in_training"] == 48
    assert "used in training" in printed
    assert saved["calibration"]["evaluated_on"].startswith("these predictions")
    assert set(saved["slice"]["operating_points"]) == {
        p.name for p in read_thresholds(tiny_bundle / "thresholds.json")[0]
    }
    assert (out / "roc_slice.png").is_file()


def test_evaluate_needs_something_to_score(tiny_bundle: Path, capsys) -> None:
    assert main(["evaluate", "--bundle", str(tiny_bundle)]) == 2
    assert "--data DIR, --holdout" in capsys.readouterr().err
    assert main(["evaluate", "--bundle", str(tiny_bundle), "--holdout"]) == 2
    assert "without a holdout" in capsys.readouterr().err
