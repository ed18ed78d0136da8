"""ml.evaluate.oof: the studio's numbers, from a bundle's out-of-fold predictions only."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml.bundle import load_bundle
from ml.evaluate import figures as plots
from ml.evaluate import oof
from ml.metrics import scores as metrics
from ml.metrics.thresholds import read_thresholds, uncertainty_band


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


def _report_figure(page: Path) -> dict[str, Any]:
    """The data and layout a report's HTML page hands to Plotly.newPlot."""
    text = page.read_text(encoding="utf-8")
    start = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", text).end()
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(text, start)
    layout, _ = decoder.raw_decode(text, re.compile(r",\s*").match(text, end).end())
    return {"data": data, "layout": layout}


def _plain(value: Any) -> Any:
    """Plotly's JSON with its base64 typed arrays ({"dtype", "bdata"}) as lists."""
    if isinstance(value, dict) and set(value) == {"dtype", "bdata"}:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _untitled(layout: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in layout.items() if key != "title"}


def test_studio_figures_are_the_report_figures_with_bands_and_a_marker(tiny_bundle: Path) -> None:
    """The studio draws what the report's HTML draws (same functions, so the same traces,
    colours and styles), plus the 95% bands and the marker it moves."""
    bundle = load_bundle(tiny_bundle)
    scores = oof.oof_scores(bundle, "slice")
    own, active_name = read_thresholds(tiny_bundle / "thresholds.json")
    named = {p.name: p.threshold for p in own}
    active = named[active_name]
    curves = oof.curves(scores, n_resamples=20, seed=0)
    studio = _plain(oof.figures(scores, curves, threshold=active, points=named))
    report = {
        name: _plain(_report_figure(tiny_bundle / "report" / f"{name}_slice.html"))
        for name in ("roc", "pr", "distribution")
    }
    for name in ("roc", "pr"):
        traces = studio[name]["data"]
        band = [t for t in traces if t["name"] == plots.BAND_NAME]
        marker = [t for t in traces if t.get("meta") == plots.THRESHOLD_TAG]
        assert len(band) == 2 and band[1]["fill"] == "tonexty" and len(marker) == 1
        assert band[1]["fillcolor"] == plots.BAND_COLOR
        assert band[0]["y"] == pytest.approx(curves[name]["band"]["low"])
        assert [t for t in traces if t not in band + marker] == report[name]["data"]
        assert _untitled(studio[name]["layout"]) == _untitled(report[name]["layout"])
        assert "(out-of-fold)" in studio[name]["layout"]["title"]["text"]
    assert studio["distribution"]["data"] == report["distribution"]["data"]
    assert _untitled(studio["distribution"]["layout"]) == _untitled(
        report["distribution"]["layout"]
    )
    colours = {t["marker"]["color"] for t in studio["distribution"]["data"]}
    assert colours == {plots.NORMAL_COLOR, plots.STROKE_COLOR}
    [line] = studio["distribution"]["layout"]["shapes"]
    assert (line["name"], line["x0"]) == (plots.THRESHOLD_TAG, active)


def test_studio_figures_are_made_by_the_figure_functions(tiny_bundle: Path) -> None:
    scores = oof.oof_scores(load_bundle(tiny_bundle), "patient")
    curves = oof.curves(scores, n_resamples=20, seed=0)
    studio = oof.figures(scores, curves, threshold=0.3, points={"mine": 0.6})
    y, p = scores.labels, scores.scores
    expected = plots.roc_figure(
        y,
        p,
        points={"mine": 0.6},
        band=curves["roc"]["band"],
        threshold=0.3,
        title="ROC, patients (out-of-fold)",
    )
    assert studio["roc"] == plots.figure_json(expected)
    marker = next(t for t in _plain(studio["pr"])["data"] if t.get("meta") == "threshold")
    counts = metrics.at_threshold(y, p, 0.3)
    assert marker["x"] == [pytest.approx(counts["sensitivity"])]
    assert marker["y"] == [pytest.approx(counts["ppv"])]
