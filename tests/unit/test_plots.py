"""ml.evaluate.figures: figures match ml.metrics.scores, files work offline, the PNG converter is
strict."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from ml.evaluate import figures as plots
from ml.metrics import scores as metrics

POINTS = {"Youden": 0.47, "Screening": 0.3}


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    """300 labelled scores, a quarter stroke, overlapping classes, with ties at two decimals."""
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.25).astype(int)
    p = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.18), 0.0, 1.0), 2)
    return y, p


def _reliability(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict:
    """Bins in the documented shape, built independently of ml.evaluate.figures; empty bins are
    None."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges) - 1, 0, n_bins - 1)
    members = [index == b for b in range(n_bins)]
    return {
        "bin_edges": edges.tolist(),
        "mean_predicted": [float(p[m].mean()) if m.any() else None for m in members],
        "fraction_positive": [float(y[m].mean()) if m.any() else None for m in members],
        "count": [int(m.sum()) for m in members],
    }


def _trace(fig: go.Figure, name_start: str):
    matches = [t for t in fig.data if (t.name or "").startswith(name_start)]
    assert len(matches) == 1, [t.name for t in fig.data]
    return matches[0]


def test_roc_curve_spans_the_corners_and_states_the_auc(scores) -> None:
    y, p = scores
    fig = plots.roc_figure(y, p, points=POINTS)
    curve = _trace(fig, "ROC")
    assert (curve.x[0], curve.y[0]) == (0.0, 0.0)
    assert (curve.x[-1], curve.y[-1]) == (1.0, 1.0)
    title_auc = re.search(r"AUC (\d\.\d{3})", fig.layout.title.text).group(1)
    assert title_auc == f"{metrics.roc_auc(y, p):.3f}"
    assert f"AUC {title_auc}" in curve.name
    assert "1 − specificity" in fig.layout.xaxis.title.text


def test_roc_operating_points_sit_where_at_threshold_puts_them(scores) -> None:
    y, p = scores
    fig = plots.roc_figure(y, p, points=POINTS)
    for name, threshold in POINTS.items():
        counts = metrics.at_threshold(y, p, threshold)
        marker = _trace(fig, name)
        assert marker.x[0] == pytest.approx(1.0 - counts["specificity"])
        assert marker.y[0] == pytest.approx(counts["sensitivity"])


def test_pr_figure_states_average_precision_prevalence_and_points(scores) -> None:
    y, p = scores
    fig = plots.pr_figure(y, p, points=POINTS)
    assert f"average precision {metrics.pr_auc(y, p):.3f}" in fig.layout.title.text
    chance = _trace(fig, "Chance")
    assert list(chance.y) == pytest.approx([y.mean(), y.mean()])
    curve = _trace(fig, "Precision-recall")
    assert np.all(np.diff(curve.x) >= 0)  # drawn left to right
    assert (curve.x[0], curve.y[0]) == (0.0, 1.0)
    assert (curve.x[-1], curve.y[-1]) == pytest.approx((1.0, y.mean()))  # everything called stroke
    assert curve.line.shape == "vh"  # the step that average precision integrates
    counts = metrics.at_threshold(y, p, POINTS["Youden"])
    marker = _trace(fig, "Youden")
    assert (marker.x[0], marker.y[0]) == pytest.approx((counts["sensitivity"], counts["ppv"]))


def test_confusion_cells_are_the_counts_in_documented_order(scores) -> None:
    y, p = scores
    counts = metrics.at_threshold(y, p, 0.5)
    heatmap = plots.confusion_figure(counts).data[0]
    assert list(heatmap.y) == ["Normal", "Stroke"]  # rows: true class
    assert list(heatmap.x) == ["Normal", "Stroke"]  # columns: predicted class
    assert [list(row) for row in heatmap.z] == [
        [counts["tn"], counts["fp"]],
        [counts["fn"], counts["tp"]],
    ]
    stroke_caught = heatmap.text[1][1]
    assert str(counts["tp"]) in stroke_caught
    assert f"{counts['sensitivity']:.1%}" in stroke_caught


def test_confusion_rejects_counts_that_are_not_counts() -> None:
    with pytest.raises(ValueError, match="lack"):
        plots.confusion_figure({"tp": 1, "fp": 2, "tn": 3})
    with pytest.raises(ValueError, match="whole numbers"):
        plots.confusion_figure({"tp": 1, "fp": -2, "tn": 3, "fn": 0})


def test_histogram_bars_sum_to_the_class_counts(scores) -> None:
    y, p = scores
    fig = plots.distribution_figure(y, p, threshold=0.4, bins=20)
    normal, stroke = _trace(fig, "Normal"), _trace(fig, "Stroke")
    assert sum(normal.y) == np.sum(y == 0)
    assert sum(stroke.y) == np.sum(y == 1)
    assert len(normal.x) == len(stroke.x) == 20
    assert list(normal.x) == list(stroke.x)  # the same bins for both classes
    assert [(s.x0, s.x1) for s in fig.layout.shapes] == [(0.4, 0.4)]
    assert "Count" in fig.layout.yaxis.title.text


def test_density_histograms_have_unit_area(scores) -> None:
    y, p = scores
    fig = plots.distribution_figure(y, p, bins=10, density=True)
    for trace in fig.data:
        assert np.sum(np.asarray(trace.y) * np.asarray(trace.width)) == pytest.approx(1.0)
    assert "Density" in fig.layout.yaxis.title.text


def test_reliability_skips_empty_bins_and_draws_both_curves(scores) -> None:
    y, p = scores
    before = _reliability(p, y)
    before["mean_predicted"][9] = before["fraction_positive"][9] = None
    before["count"][9] = 0
    fig = plots.reliability_figure(before, _reliability(np.sqrt(p), y))
    curve = _trace(fig, "Before calibration")
    kept = [x for x in before["mean_predicted"] if x is not None]
    assert list(curve.x) == pytest.approx(kept)
    assert _trace(fig, "After calibration").mode == "lines+markers"
    assert _trace(fig, "Perfect calibration").y == (0, 1)


def test_threshold_curves_agree_with_at_threshold(scores) -> None:
    y, p = scores
    fig = plots.threshold_figure(y, p, points={"Named": 0.437})
    sensitivity, specificity, f1 = (_trace(fig, n) for n in ("Sensitivity", "Specificity", "F1"))
    for threshold in (0.0, 0.35, 0.437, 0.5, 0.62, 1.0):  # 0.35 and 0.62 are tied scores
        index = int(np.flatnonzero(np.asarray(sensitivity.x) == threshold)[0])
        counts = metrics.at_threshold(y, p, threshold)
        assert sensitivity.y[index] == pytest.approx(counts["sensitivity"])
        assert specificity.y[index] == pytest.approx(counts["specificity"])
        assert f1.y[index] == pytest.approx(counts["f1"])
    assert [s.x0 for s in fig.layout.shapes] == [0.437]


@pytest.mark.parametrize("build", [plots.roc_figure, plots.pr_figure, plots.threshold_figure])
def test_one_class_is_refused(build) -> None:
    with pytest.raises(ValueError, match="both classes"):
        build([0, 0, 0], [0.1, 0.4, 0.3])


def test_inputs_follow_the_metrics_conventions() -> None:
    with pytest.raises(ValueError, match="equal length"):
        plots.roc_figure([0, 1, 1], [0.1, 0.9])
    with pytest.raises(ValueError, match="0 or 1"):
        plots.distribution_figure([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plots.distribution_figure([0, 1], [0.1, 3.0])
    with pytest.raises(ValueError, match="empty"):
        plots.reliability_figure(
            {
                "bin_edges": [0, 1],
                "mean_predicted": [None],
                "fraction_positive": [None],
                "count": [0],
            }
        )


@pytest.fixture(scope="module")
def written(scores, tmp_path_factory) -> tuple[Path, list[Path], dict[str, go.Figure]]:
    y, p = scores
    figures = {
        "roc": plots.roc_figure(y, p, points=POINTS),
        "pr": plots.pr_figure(y, p, points=POINTS),
        "confusion": plots.confusion_figure(metrics.at_threshold(y, p, 0.47)),
        "distribution": plots.distribution_figure(y, p, threshold=0.47),
        "reliability": plots.reliability_figure(_reliability(p, y), _reliability(p**1.3, y)),
        "threshold": plots.threshold_figure(y, p, points=POINTS),
    }
    out = tmp_path_factory.mktemp("figures")
    return out, plots.write_figures(out, figures), figures


def test_write_figures_writes_html_png_and_one_plotly_js(written) -> None:
    out, paths, figures = written
    expected = {f"{name}.{ext}" for name in figures for ext in ("html", "png")}
    assert {p.name for p in out.iterdir()} == expected | {"plotly.min.js"}
    assert sorted(p.name for p in paths) == sorted(expected | {"plotly.min.js"})
    assert (out / "plotly.min.js").stat().st_size > 1_000_000


def test_html_loads_plotly_from_its_own_folder(written) -> None:
    out, _, figures = written
    for name in figures:
        page = (out / f"{name}.html").read_text(encoding="utf-8")
        sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page)
        assert sources == ["plotly.min.js"]
        assert "cdn" not in page.lower()
        assert "https://" not in page


def test_pngs_have_the_requested_size_and_are_not_blank(written) -> None:
    out, _, figures = written
    for name in figures:
        with Image.open(out / f"{name}.png") as image:
            assert image.format == "PNG"
            assert image.size == (800, 600)
            assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 50


def test_png_shows_the_trace_colours(tmp_path: Path) -> None:
    """The converter draws the data, not just the frame: the class colours reach the pixels."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": plots.STROKE_COLOR}))
    fig.add_trace(go.Bar(x=[0.5], y=[0.5], width=[0.2], marker={"color": plots.NORMAL_COLOR}))
    path = tmp_path / "colours.png"
    plots.figure_to_png(fig, path, width_px=400, height_px=300)
    with Image.open(path) as image:
        assert image.size == (400, 300)
        pixels = {rgb for _, rgb in image.convert("RGB").getcolors(maxcolors=1_000_000)}
    for color in (plots.STROKE_COLOR, plots.NORMAL_COLOR):
        assert tuple(int(color[i : i + 2], 16) for i in (1, 3, 5)) in pixels


BAND = {"grid": [0.0, 0.5, 1.0], "low": [0.0, 0.3, 0.9], "high": [0.2, 0.8, 1.0]}


def test_roc_band_and_threshold_marker(scores) -> None:
    y, p = scores
    fig = plots.roc_figure(y, p, points=POINTS, band=BAND, threshold=0.42)
    lower, upper = fig.data[:2]  # under everything else
    assert lower.showlegend is False and upper.name == plots.BAND_NAME
    assert upper.fill == "tonexty" and upper.fillcolor == plots.BAND_COLOR
    assert list(lower.y) == BAND["low"] and list(upper.y) == BAND["high"]
    [marker] = [t for t in fig.data if t.meta == plots.THRESHOLD_TAG]
    counts = metrics.at_threshold(y, p, 0.42)
    assert marker.x[0] == pytest.approx(1.0 - counts["specificity"])
    assert marker.y[0] == pytest.approx(counts["sensitivity"])
    assert _trace(fig, "ROC").line.color == plots.CURVE_COLOR
    with pytest.raises(ValueError, match="band lacks high"):
        plots.roc_figure(y, p, band={"grid": [0], "low": [0]})
    with pytest.raises(ValueError, match="outside"):
        plots.roc_figure(y, p, threshold=1.2)


def test_pr_marker_has_no_position_where_precision_is_undefined(scores) -> None:
    y, p = scores
    fig = plots.pr_figure(y, p * 0.9, band=BAND, threshold=0.95)  # above every score
    [marker] = [t for t in fig.data if t.meta == plots.THRESHOLD_TAG]
    assert marker.x == (0.0,) and marker.y == (None,)


def test_distribution_threshold_line_and_label_are_tagged(scores) -> None:
    y, p = scores
    fig = plots.distribution_figure(y, p, threshold=0.4)
    [line], [label] = fig.layout.shapes, fig.layout.annotations
    assert (line.name, line.x0, line.x1) == (plots.THRESHOLD_TAG, 0.4, 0.4)
    assert (label.name, label.text) == (plots.THRESHOLD_TAG, "threshold 0.400")
    untagged = plots.threshold_figure(y, p, points={"Named": 0.437})
    assert [s.name for s in untagged.layout.shapes] == [None]


def test_png_draws_a_band_as_a_fill(scores, tmp_path: Path) -> None:
    y, p = scores
    path = tmp_path / "roc.png"
    plots.figure_to_png(plots.roc_figure(y, p, band=BAND, threshold=0.4), path)
    with Image.open(path) as image:
        pixels = {rgb for _, rgb in image.convert("RGB").getcolors(maxcolors=1_000_000)}
    assert (224, 224, 224) in pixels  # black at 12% over white: the band


def test_figure_to_png_refuses_what_it_cannot_draw(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pie"):
        plots.figure_to_png(go.Figure(go.Pie(values=[1, 2])), tmp_path / "pie.png")
    with pytest.raises(ValueError, match="arrow"):
        plots.figure_to_png(go.Figure(layout={"annotations": [{"text": "a"}]}), tmp_path / "a.png")
    with pytest.raises(ValueError, match="tozeroy"):
        plots.figure_to_png(
            go.Figure(go.Scatter(x=[0, 1], y=[0, 1], fill="tozeroy")), tmp_path / "f"
        )
    lower, upper = go.Scatter(x=[0, 1], y=[0, 0]), go.Scatter(x=[0, 2], y=[1, 1], fill="tonexty")
    with pytest.raises(ValueError, match="same x"):
        plots.figure_to_png(go.Figure([lower, upper]), tmp_path / "g.png")
    assert not list(tmp_path.iterdir())


def test_write_figures_refuses_names_that_are_not_file_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        plots.write_figures(tmp_path, {"../roc": go.Figure()})
