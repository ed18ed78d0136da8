"""ml.evaluate.oof: the studio's numbers, from a bundle's out-of-fold predictions only."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ml.bundle import load_bundle
from ml.evaluate import oof
from ml.metrics import scores as metrics
from ml.metrics.thresholds import uncertainty_band


def _rows(bundle_path: Path) -> list[dict[str, str]]:
    with (bundle_path / "oof.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_slice_scores_are_the_oof_csv(tiny_bundle: Path) -> None:
    scores = oof.oof_scores(load_bundle(tiny_bundle), "slice")
    rows = _rows(tiny_bundle)
    assert scores.labels.tolist() == [int(r["label"]) for r in rows]
    assert scores.scores == pytest.approx([float(r["probability"]) for r in rows])
    assert scores.aggregation is None


def test_patient_scores_use_the_bundle_aggregation(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    scores = oof.oof_scores(bundle, "patient")
    rows = _rows(tiny_bundle)
    method = bundle.train_config().study_aggregation
    first = scores.groups[0]
    mine = [float(r["probability"]) for r in rows if r["patient_id"] == first]
    assert scores.aggregation == method
    assert scores.scores[0] == pytest.approx(metrics.aggregate(mine, method))
    assert len(scores.groups) == len({r["patient_id"] for r in rows})
    with pytest.raises(ValueError, match="slice, patient"):
        oof.oof_scores(bundle, "study")


def test_metrics_at_match_counts_and_wilson(tiny_bundle: Path) -> None:
    scores = oof.oof_scores(load_bundle(tiny_bundle), "slice")
    threshold = float(np.median(scores.scores))
    figures = oof.metrics_at(scores, threshold)
    expected = metrics.at_threshold(scores.labels, scores.scores, threshold)
    for key in ("tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv", "f1"):
        assert figures[key] == expected[key], key
    tp, fn = expected["tp"], expected["fn"]
    assert figures["ci95"]["sensitivity"] == pytest.approx(metrics.wilson_ci(tp, tp + fn))
    assert figures["n"] == scores.labels.size
    with pytest.raises(ValueError, match="threshold"):
        oof.metrics_at(scores, 1.5)


def test_predictive_values_at_another_prevalence() -> None:
    # 1000 people at 10% prevalence, sensitivity 0.8, specificity 0.9:
    # 80 true positives, 90 false positives, 810 true negatives, 20 false negatives.
    values = oof.predictive_values(0.8, 0.9, 0.1)
    assert values["ppv"] == pytest.approx(80 / 170)
    assert values["npv"] == pytest.approx(810 / 830)
    assert oof.predictive_values(None, 0.9, 0.1)["ppv"] is None


def test_band_is_measured_at_the_new_threshold(tiny_bundle: Path) -> None:
    scores = oof.oof_scores(load_bundle(tiny_bundle), "slice")
    expected = uncertainty_band(scores.labels, scores.scores, 0.3, share=0.2)["half_width"]
    assert oof.band_half_width(scores, 0.3, 0.2) == pytest.approx(expected)


def test_curves_carry_bands_that_hold_the_curve(tiny_bundle: Path) -> None:
    scores = oof.oof_scores(load_bundle(tiny_bundle), "slice")
    curves = oof.curves(scores, n_resamples=60, seed=1)
    roc = curves["roc"]
    assert roc["auc"] == pytest.approx(metrics.roc_auc(scores.labels, scores.scores))
    low, high = np.array(roc["band"]["low"]), np.array(roc["band"]["high"])
    assert np.all(low <= high + 1e-12)
    curve_on_grid = np.interp(oof.GRID, roc["fpr"], roc["tpr"])
    inside = (curve_on_grid >= low - 1e-9) & (curve_on_grid <= high + 1e-9)
    assert inside.mean() > 0.8  # a pointwise band holds most of the full-data curve
    assert 0 < curves["n_resamples"] <= 60
    assert len(curves["pr"]["band"]["low"]) == len(oof.GRID)
