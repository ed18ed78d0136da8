"""Evaluation figures, built once as Plotly figures and written as offline HTML and as PNG.

Each plot's logic lives in one place, the Plotly figure. The PNG is redrawn from that same figure
object by `figure_to_png`, a small converter to matplotlib's Agg backend for the few trace types
used here, because Plotly's own static export (kaleido) downloads a browser, and hospital networks
are closed. The converter raises `ValueError` on anything it cannot draw, so a new kind of plot
fails loudly instead of coming out blank.

Colours follow Okabe and Ito's colour-blind-safe palette: Normal is always blue and Stroke always
vermillion; curves that belong to neither class are black, and named operating points take the
remaining palette colours, each with its own marker symbol so that colour is never the only cue.

The threshold studio draws these same figures (`figure_json`, served by the web app) and moves
only what a threshold changes: the marker and the line tagged `THRESHOLD_TAG`.

Research software, not for clinical use.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory
from plotly.offline import get_plotlyjs
from sklearn.metrics import precision_recall_curve, roc_curve

from ml.metrics.scores import at_threshold, pr_auc, roc_auc, validate_scores

NORMAL_COLOR = "#0072B2"  # Okabe-Ito blue
STROKE_COLOR = "#D55E00"  # Okabe-Ito vermillion
CURVE_COLOR = "#000000"
REFERENCE_COLOR = "#7F7F7F"  # chance lines and perfect calibration
BAND_COLOR = "rgba(0,0,0,0.12)"  # a curve's 95% band: the curve's black, faint
BAND_NAME = "95% band (patients resampled)"
# The `meta` of the marker, and the `name` of the line and its label, that stand at a threshold
# the threshold studio moves; the browser finds them by this tag.
THRESHOLD_TAG = "threshold"
POINT_COLORS = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
POINT_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
CLASS_NAMES = ("Normal", "Stroke")
THRESHOLD_GRID = np.arange(1001) / 1000  # division, not a float step, so 0.5 is exactly 0.5
# (colour, dash, marker) for the curve before and the curve after calibration
CALIBRATION_STYLES = (("#CC79A7", "dash", "circle"), ("#009E73", "solid", "square"))
PLOTLY_JS = "plotly.min.js"
_TEMPLATE = "plotly_white"


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def roc_figure(
    y_true: Sequence[int],
    y_score: Sequence[float],
    *,
    points: Mapping[str, float] | None = None,
    title: str = "ROC curve",
    band: Mapping[str, Sequence[float]] | None = None,
    threshold: float | None = None,
) -> go.Figure:
    """The ROC curve with its AUC, the chance diagonal, and a marker per named threshold.

    A marker sits at (1 - specificity, sensitivity) as `metrics.at_threshold` counts them, so the
    figure shows the same operating point that the reports quote. `band` (grid, low, high: TPR
    over FPR, as `ml.evaluate.oof.curves` gives it) adds the 95% band under the curve; `threshold`
    adds the studio's movable marker there.
    """
    y, p = validate_scores(y_true, y_score)
    fpr, tpr, thresholds = roc_curve(y, p)
    auc = roc_auc(y, p)
    fig = go.Figure()
    fig.add_traces(_band_traces(band))
    fig.add_trace(_reference_line([0, 1], [0, 1], "Chance (AUC 0.5)"))
    fig.add_trace(
        go.Scatter(
            x=fpr,
            y=tpr,
            mode="lines",
            name=f"ROC (AUC {auc:.3f})",
            line={"color": CURVE_COLOR, "width": 2.5},
            text=[_called_stroke(t) for t in thresholds],
            hovertemplate="FPR %{x:.3f}, TPR %{y:.3f}<br>%{text}<extra></extra>",
        )
    )
    for index, (name, named) in enumerate(_checked_points(points).items()):
        counts = at_threshold(y, p, named)
        fig.add_trace(
            _point_marker(
                index,
                f"{name} ({_rates_label(counts)})",
                1.0 - counts["specificity"],
                counts["sensitivity"],
            )
        )
    if threshold is not None:
        counts = at_threshold(y, p, _checked_threshold(threshold))
        fig.add_trace(_threshold_marker(1.0 - counts["specificity"], counts["sensitivity"]))
    _style(
        fig,
        title=f"{title}: stroke against normal<br><sup>AUC {auc:.3f}; {_class_counts(y)}</sup>",
        x_title="False positive rate (1 − specificity)",
        y_title="True positive rate (sensitivity)",
        x_range=(0.0, 1.0),
        y_range=(0.0, 1.02),
        legend_corner="bottom right",
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def pr_figure(
    y_true: Sequence[int],
    y_score: Sequence[float],
    *,
    points: Mapping[str, float] | None = None,
    title: str = "Precision-recall curve",
    band: Mapping[str, Sequence[float]] | None = None,
    threshold: float | None = None,
) -> go.Figure:
    """Precision against recall for stroke, its average precision, and the prevalence line.

    The curve is drawn as the step function that average precision integrates; a straight line
    between the points would show precision the model does not reach. A random classifier's
    precision is the prevalence, drawn as the chance line. `band` (precision over recall) and
    `threshold` as in `roc_figure`; at a threshold that calls no scan stroke, precision is
    undefined and the marker has no position.
    """
    y, p = validate_scores(y_true, y_score)
    precision, recall, _ = precision_recall_curve(y, p)
    average_precision = pr_auc(y, p)
    prevalence = float(y.mean())
    fig = go.Figure()
    fig.add_traces(_band_traces(band))
    fig.add_trace(
        _reference_line([0, 1], [prevalence, prevalence], f"Chance (prevalence {prevalence:.3f})")
    )
    fig.add_trace(
        go.Scatter(
            x=recall[::-1],  # scikit-learn gives recall decreasing; draw left to right
            y=precision[::-1],
            mode="lines",
            line={"color": CURVE_COLOR, "width": 2.5, "shape": "vh"},
            name=f"Precision-recall (AP {average_precision:.3f})",
            hovertemplate="recall %{x:.3f}, precision %{y:.3f}<extra></extra>",
        )
    )
    for index, (name, named) in enumerate(_checked_points(points).items()):
        counts = at_threshold(y, p, named)
        if counts["ppv"] is None:
            label = f"{name} (threshold {named:.3f}: no stroke calls, precision undefined)"
            fig.add_trace(_point_marker(index, label, None, None))
        else:
            label = (
                f"{name} (threshold {named:.3f}: recall {counts['sensitivity']:.2f}, "
                f"precision {counts['ppv']:.2f})"
            )
            fig.add_trace(_point_marker(index, label, counts["sensitivity"], counts["ppv"]))
    if threshold is not None:
        counts = at_threshold(y, p, _checked_threshold(threshold))
        fig.add_trace(_threshold_marker(counts["sensitivity"], counts["ppv"]))
    _style(
        fig,
        title=(
            f"{title} for stroke<br><sup>average precision {average_precision:.3f}; "
            f"prevalence {prevalence:.3f}; {_class_counts(y)}</sup>"
        ),
        x_title="Recall (sensitivity)",
        y_title="Precision (positive predictive value)",
        x_range=(0.0, 1.0),
        y_range=(0.0, 1.02),
        legend_corner="bottom left",
    )
    return fig


def confusion_figure(counts: Mapping[str, float], *, title: str = "Confusion matrix") -> go.Figure:
    """A 2x2 heatmap of the counts `metrics.at_threshold` returns, each cell with its row rate.

    Rows are the true class and columns the predicted class, both in the order Normal, Stroke,
    with Normal on top; the row rates are therefore specificity and its complement on the top
    row, and the miss rate and sensitivity on the bottom row.
    """
    tn, fp, fn, tp = _confusion_counts(counts)
    rows = [[tn, fp], [fn, tp]]
    text = [
        [_cell_label(count, sum(row), true_class) for count in row]
        for row, true_class in zip(rows, CLASS_NAMES, strict=True)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=rows,
            x=list(CLASS_NAMES),
            y=list(CLASS_NAMES),
            text=text,
            texttemplate="%{text}",
            textfont={"size": 16},
            colorscale="Blues",
            zmin=0,
            colorbar={"title": {"text": "Count"}},
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    threshold = counts.get("threshold")
    at = f" at threshold {float(threshold):.3f}" if threshold is not None else ""
    _style(
        fig,
        title=(
            f"{title}{at}<br><sup>{tn + fp} normal, {fn + tp} stroke; "
            "each cell: count and share of its true class</sup>"
        ),
        x_title="Predicted class",
        y_title="True class",
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def distribution_figure(
    y_true: Sequence[int],
    y_score: Sequence[float],
    *,
    threshold: float | None = None,
    bins: int = 20,
    density: bool = False,
    title: str = "Predicted probability of stroke by true class",
) -> go.Figure:
    """Histograms of the predicted probability for each true class, on the same [0, 1] bins.

    The bars are binned here, not by Plotly, so that the HTML and the PNG show the same bins.
    Counts by default; `density=True` scales each class to unit area, which compares the shapes
    when one class is much larger. One class alone is allowed: it is still worth seeing.
    """
    y, p = validate_scores(y_true, y_score, both_classes=False)
    _require_probabilities(p)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig = go.Figure()
    classes = zip(CLASS_NAMES, (NORMAL_COLOR, STROKE_COLOR), strict=True)
    for label, (name, color) in enumerate(classes):
        fig.add_trace(_histogram_bars(p[y == label], edges, name, color, density=density))
    if threshold is not None:
        checked = _checked_threshold(threshold)
        _add_vertical_line(fig, checked, f"threshold {checked:.3f}", tag=THRESHOLD_TAG)
    y_title = "Density (each class's area is 1)" if density else "Count of scans per bin"
    _style(
        fig,
        title=f"{title}<br><sup>{_class_counts(y)}; {bins} bins of width {1 / bins:.3g}</sup>",
        x_title="Predicted probability of stroke",
        y_title=y_title,
        x_range=(0.0, 1.0),
        legend_corner="top right",
    )
    fig.update_layout(barmode="overlay", bargap=0.0)
    return fig


def reliability_figure(
    before: Mapping[str, Sequence[float | None]],
    after: Mapping[str, Sequence[float | None]] | None = None,
    *,
    title: str = "Reliability",
) -> go.Figure:
    """Observed stroke fraction against mean predicted probability per bin, before and after.

    Each input holds `bin_edges`, `mean_predicted`, `fraction_positive` and `count`, one value
    per bin (edges one more); empty bins are None and are left out. Points on the diagonal are
    perfectly calibrated: of the scans given probability 0.3, 30% had a stroke.
    """
    fig = go.Figure()
    fig.add_trace(_reference_line([0, 1], [0, 1], "Perfect calibration"))
    curves = [("Before calibration" if after is not None else "Model", before)]
    if after is not None:
        curves.append(("After calibration", after))
    for index, (name, bins) in enumerate(curves):
        predicted, observed, count = _reliability_points(bins, name)
        color, dash, symbol = CALIBRATION_STYLES[index]
        fig.add_trace(
            go.Scatter(
                x=predicted,
                y=observed,
                mode="lines+markers",
                name=f"{name} ({len(predicted)} non-empty bins)",
                line={"color": color, "width": 2, "dash": dash},
                marker={"color": color, "size": 9, "symbol": symbol},
                customdata=count,
                hovertemplate="predicted %{x:.3f}, observed %{y:.3f}<br>%{customdata} scans"
                "<extra></extra>",
            )
        )
    _style(
        fig,
        title=f"{title}: observed stroke fraction against predicted probability",
        x_title="Mean predicted probability of stroke (per bin)",
        y_title="Observed fraction with stroke (per bin)",
        x_range=(0.0, 1.0),
        y_range=(0.0, 1.0),
        legend_corner="top left",
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def threshold_figure(
    y_true: Sequence[int],
    y_score: Sequence[float],
    *,
    points: Mapping[str, float] | None = None,
    title: str = "Sensitivity, specificity and F1 by threshold",
) -> go.Figure:
    """Sensitivity, specificity and F1 as the threshold moves over [0, 1], named points marked.

    Evaluated on a 0.001 grid plus the named thresholds, counting scores >= threshold as stroke
    exactly as `metrics.at_threshold` does, so a value read off the curve at a grid or named
    threshold is the one the reports quote.
    """
    y, p = validate_scores(y_true, y_score)
    _require_probabilities(p)
    named = {name: _checked_threshold(t) for name, t in _checked_points(points).items()}
    grid = np.union1d(THRESHOLD_GRID, list(named.values()))
    rates = _rates_by_threshold(y, p, grid)
    fig = go.Figure()
    styles = {"Sensitivity": (STROKE_COLOR, "solid"), "Specificity": (NORMAL_COLOR, "dash")}
    for name, values in rates.items():
        color, dash = styles.get(name, (CURVE_COLOR, "dot"))
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=values,
                mode="lines",
                name=name,
                line={"color": color, "width": 2.5, "dash": dash},
                hovertemplate=f"threshold %{{x:.3f}}: {name.lower()} %{{y:.3f}}<extra></extra>",
            )
        )
    for index, (name, threshold) in enumerate(named.items()):
        _add_vertical_line(
            fig, threshold, f"{name} ({threshold:.3f})", color=_point_color(index), row=index
        )
    _style(
        fig,
        title=(
            f"{title}<br><sup>stroke called when probability ≥ threshold; {_class_counts(y)}</sup>"
        ),
        x_title="Threshold (predicted probability of stroke)",
        y_title="Rate (sensitivity, specificity) or F1",
        x_range=(0.0, 1.0),
        y_range=(0.0, 1.02),
        legend_corner="bottom center",
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def figure_json(fig: go.Figure) -> dict:
    """The figure as Plotly's JSON (data, layout), ready to serve to plotly.js."""
    return json.loads(fig.to_json())


def write_figures(out_dir: Path, figures: Mapping[str, go.Figure]) -> list[Path]:
    """Write NAME.html and NAME.png for each figure, and one plotly.min.js beside them.

    The HTML loads plotly.min.js from its own folder (`include_plotlyjs="directory"`), so the
    pages work offline and the 4-5 MB library is written once rather than once per page. It is
    rewritten on every call so that it always matches the Plotly version that wrote the pages.
    """
    out_dir = Path(out_dir)
    for name in figures:
        _check_figure_name(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / PLOTLY_JS
    library.write_text(get_plotlyjs(), encoding="utf-8")
    written = [library]
    for name, fig in figures.items():
        page = out_dir / f"{name}.html"
        image = out_dir / f"{name}.png"
        fig.write_html(
            page, include_plotlyjs="directory", full_html=True, config={"displaylogo": False}
        )
        figure_to_png(fig, image)
        written += [page, image]
    return written


def _check_figure_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == "plotly.min":
        raise ValueError(
            f"figure name {name!r} must be a plain file name (letters, digits, '_', '-', '.')"
            " and not 'plotly.min'"
        )


# ---------------------------------------------------------------------------------------------
# Plotly to matplotlib
# ---------------------------------------------------------------------------------------------

_DPI = 100
_DASHES = {
    "solid": "-",
    "dot": ":",
    "dash": "--",
    "dashdot": "-.",
    "longdash": (0, (8, 3)),
    "longdashdot": (0, (8, 3, 1, 3)),
}
_SYMBOLS = {
    "circle": "o",
    "square": "s",
    "diamond": "D",
    "triangle-up": "^",
    "triangle-down": "v",
    "x": "X",
    "cross": "P",
    "star": "*",
}
_STEPS = {"linear": "default", "hv": "steps-post", "vh": "steps-pre"}
_LEGEND_LOCATIONS = {"top": "upper", "middle": "center", "bottom": "lower"}


def figure_to_png(fig: go.Figure, path: Path, *, width_px: int = 800, height_px: int = 600) -> None:
    """Draw a Plotly figure as a PNG of exactly width_px by height_px, with matplotlib (Agg).

    Supports what the figures here use: scatter (lines, markers, dashes, step shapes, a fill
    down to the trace before on the same x values, as a 95% band is drawn), bar
    (grouped or overlaid, with opacity), heatmap (with texttemplate cell text), line shapes,
    annotations without arrows, axis titles and ranges, and the figure title. Anything else
    raises `ValueError`, so an unsupported plot fails instead of rendering blank or wrong.
    The figure never touches pyplot, so no display is needed and none is left open.
    """
    if width_px < 100 or height_px < 100:
        raise ValueError(f"PNG size {width_px}x{height_px} px is too small; use at least 100x100")
    _check_supported(fig)
    canvas = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(canvas)
    ax = canvas.add_subplot()
    bars = [id(trace) for trace in fig.data if trace.type == "bar"]
    previous = None  # the scatter trace a fill "tonexty" reaches down to
    for trace in fig.data:
        if trace.visible in (False, "legendonly"):
            continue
        if trace.type == "scatter":
            _draw_scatter(ax, trace, previous)
            previous = trace
        elif trace.type == "bar":
            _draw_bar(ax, trace, bars.index(id(trace)), len(bars), fig.layout)
        else:
            _draw_heatmap(ax, canvas, trace)
    for shape in fig.layout.shapes:
        _draw_shape(ax, shape)
    for annotation in fig.layout.annotations:
        _draw_annotation(ax, annotation)
    _apply_axes(ax, fig.layout)
    _draw_legend(ax, fig.layout)
    if fig.layout.title.text:
        ax.set_title(_plain_text(fig.layout.title.text), fontsize=13)
    canvas.savefig(Path(path), format="png", dpi=_DPI, metadata={"Software": None})


def _check_supported(fig: go.Figure) -> None:
    unsupported = sorted({trace.type for trace in fig.data} - {"scatter", "bar", "heatmap"})
    if unsupported:
        raise ValueError(
            f"figure_to_png cannot draw trace type {', '.join(unsupported)}; "
            "it draws scatter, bar and heatmap"
        )
    for trace in fig.data:
        if (trace.xaxis or "x") != "x" or (trace.yaxis or "y") != "y":
            raise ValueError("figure_to_png draws one pair of axes; subplots are not supported")
    if fig.layout.barmode not in (None, "group", "overlay"):
        raise ValueError(f"figure_to_png does not draw barmode {fig.layout.barmode!r}")


def _draw_scatter(ax, trace: go.Scatter, previous: go.Scatter | None) -> None:
    x, y = _numbers(trace.x, "x"), _numbers(trace.y, "y")
    mode = trace.mode or ("lines+markers" if len(x) < 20 else "lines")
    if "text" in mode:
        raise ValueError("figure_to_png does not draw scatter text mode")
    label = _legend_label(trace)
    if (trace.fill or "none") != "none":
        _draw_fill(ax, trace, previous, x, y)
        label = "_nolegend_"  # the fill stands for the trace in the legend
    shape = trace.line.shape or "linear"
    if shape not in _STEPS:
        raise ValueError(f"figure_to_png does not draw line shape {shape!r}")
    if not isinstance(trace.marker.color, str | None):
        raise ValueError("figure_to_png draws one marker colour per trace, not one per point")
    line_color = _color(trace.line.color)
    marker_color = _color(trace.marker.color) or line_color
    symbol = trace.marker.symbol or "circle"
    if "markers" in mode and symbol not in _SYMBOLS:
        raise ValueError(f"figure_to_png does not draw marker symbol {symbol!r}")
    ax.plot(
        x,
        y,
        linestyle=_dash(trace.line.dash) if "lines" in mode else "none",
        drawstyle=_STEPS[shape],
        linewidth=(2 if trace.line.width is None else trace.line.width) * 0.75,
        color=line_color or marker_color,
        marker=_SYMBOLS[symbol] if "markers" in mode else None,
        markersize=(trace.marker.size or 6) * 0.75,
        markerfacecolor=marker_color,
        markeredgecolor=_color(trace.marker.line.color) or marker_color,
        markeredgewidth=(trace.marker.line.width or 0) * 0.75,
        alpha=trace.opacity,
        label=label,
    )


def _draw_fill(ax, trace: go.Scatter, previous: go.Scatter | None, x, y) -> None:
    """Plotly's fill "tonexty": the area between this trace and the one drawn before it."""
    if trace.fill != "tonexty":
        raise ValueError(f"figure_to_png fills to the trace before only, not {trace.fill!r}")
    if previous is None or not np.array_equal(_numbers(previous.x, "x"), x):
        raise ValueError("figure_to_png fills between two traces on the same x values only")
    ax.fill_between(
        x,
        _numbers(previous.y, "y"),
        y,
        color=_color(trace.fillcolor or trace.line.color),
        linewidth=0,
        label=_legend_label(trace),
    )


def _draw_bar(ax, trace: go.Bar, index: int, count: int, layout: go.Layout) -> None:
    if trace.orientation == "h" or trace.base is not None or trace.offset is not None:
        raise ValueError("figure_to_png draws vertical bars without base or offset")
    x, heights = _numbers(trace.x, "bar x"), _numbers(trace.y, "bar y")
    if trace.width is not None:
        widths = np.broadcast_to(np.asarray(trace.width, dtype=float), x.shape)
    else:
        slot = float(np.min(np.diff(np.unique(x)))) if np.unique(x).size > 1 else 1.0
        gap = layout.bargap if layout.bargap is not None else 0.2
        widths = np.full(x.shape, slot * (1.0 - gap))
    if (layout.barmode or "group") == "group" and count > 1:
        widths = widths / count
        x = x - widths * count / 2 + widths * (index + 0.5)
    ax.bar(
        x,
        heights,
        width=widths,
        color=_color(trace.marker.color),
        alpha=trace.opacity,
        edgecolor=_color(trace.marker.line.color) or "none",
        linewidth=(trace.marker.line.width or 0) * 0.75,
        label=_legend_label(trace),
    )


def _draw_heatmap(ax, canvas: Figure, trace: go.Heatmap) -> None:
    z = np.array([[np.nan if v is None else v for v in row] for row in trace.z], dtype=float)
    x_edges, x_ticks = _cell_edges(trace.x, z.shape[1])
    y_edges, y_ticks = _cell_edges(trace.y, z.shape[0])
    colormap = _colormap(trace.colorscale, reverse=bool(trace.reversescale))
    norm = Normalize(
        vmin=trace.zmin if trace.zmin is not None else np.nanmin(z),
        vmax=trace.zmax if trace.zmax is not None else np.nanmax(z),
    )
    mesh = ax.pcolormesh(x_edges, y_edges, z, cmap=colormap, norm=norm)
    for axis, ticks in ((ax.xaxis, x_ticks), (ax.yaxis, y_ticks)):
        if ticks is not None:
            axis.set_ticks(range(len(ticks)), labels=ticks)
    if trace.showscale is not False:
        colorbar = canvas.colorbar(mesh, ax=ax)
        colorbar.set_label(_plain_text(trace.colorbar.title.text or ""))
    if trace.texttemplate:
        x_centres = (x_edges[:-1] + x_edges[1:]) / 2
        y_centres = (y_edges[:-1] + y_edges[1:]) / 2
        for row, column in np.ndindex(z.shape):
            value = z[row, column]
            ink = "white" if _luminance(colormap(norm(value))) < 0.5 else "black"
            label = _fill_template(trace, row, column)
            ax.text(
                x_centres[column],
                y_centres[row],
                label,
                ha="center",
                va="center",
                color=ink,
                fontsize=(trace.textfont.size or 12) * 0.75,
            )


def _fill_template(trace: go.Heatmap, row: int, column: int) -> str:
    """Plotly's %{field} and %{field:format} placeholders for z, text, x and y."""
    values = {
        "z": trace.z[row][column],
        "text": trace.text[row][column] if trace.text is not None else "",
        "x": trace.x[column] if trace.x is not None else column,
        "y": trace.y[row] if trace.y is not None else row,
    }

    def replace(match: re.Match) -> str:
        field, spec = match.group(1), match.group(2) or ""
        if field not in values:
            raise ValueError(f"figure_to_png does not fill %{{{field}}} in a texttemplate")
        return format(values[field], spec)

    return _plain_text(re.sub(r"%\{(\w+)(?::([^}]*))?\}", replace, trace.texttemplate))


def _draw_shape(ax, shape) -> None:
    if shape.type != "line":
        raise ValueError(f"figure_to_png draws line shapes only, not {shape.type!r}")
    ax.add_line(
        Line2D(
            [shape.x0, shape.x1],
            [shape.y0, shape.y1],
            transform=_transform(ax, shape.xref, shape.yref),
            color=_color(shape.line.color) or "black",
            linestyle=_dash(shape.line.dash),
            linewidth=(shape.line.width or 2) * 0.75,
        )
    )


def _draw_annotation(ax, annotation) -> None:
    if annotation.showarrow is not False:
        raise ValueError("figure_to_png draws annotations without arrows; set showarrow=False")
    ax.text(
        annotation.x,
        annotation.y,
        _plain_text(annotation.text or ""),
        transform=_transform(ax, annotation.xref, annotation.yref),
        ha={"left": "left", "right": "right"}.get(annotation.xanchor, "center"),
        va={"top": "top", "bottom": "bottom"}.get(annotation.yanchor, "center"),
        color=_color(annotation.font.color) or "black",
        fontsize=(annotation.font.size or 12) * 0.75,
        bbox=_text_box(annotation.bgcolor),
    )


def _apply_axes(ax, layout: go.Layout) -> None:
    for name, axis in (("x", layout.xaxis), ("y", layout.yaxis)):
        if axis.type not in (None, "-", "linear", "category"):
            raise ValueError(f"figure_to_png draws linear axes, not {axis.type!r}")
        if axis.title.text:
            getattr(ax, f"set_{name}label")(_plain_text(axis.title.text))
        if axis.range is not None:
            getattr(ax, f"set_{name}lim")(*axis.range)
        if axis.autorange == "reversed":
            getattr(ax, f"invert_{name}axis")()
    if layout.yaxis.scaleanchor == "x":
        ax.set_aspect(layout.yaxis.scaleratio or 1.0, adjustable="box")
    ax.grid(color="#E5E5E5", linewidth=0.8)
    ax.set_axisbelow(True)


def _draw_legend(ax, layout: go.Layout) -> None:
    _, labels = ax.get_legend_handles_labels()
    if not labels or layout.showlegend is False:
        return
    legend = layout.legend
    if legend.x is None or legend.y is None:  # Plotly's default: outside, top right
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
        return
    vertical = _LEGEND_LOCATIONS.get(legend.yanchor, "upper")
    horizontal = {"left": "left", "right": "right"}.get(legend.xanchor, "center")
    location = "center" if (vertical, horizontal) == ("center", "center") else None
    ax.legend(
        loc=location or f"{vertical} {horizontal}",
        bbox_to_anchor=(legend.x, legend.y),
        fontsize=8,
        framealpha=0.9,
    )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _style(
    fig: go.Figure,
    *,
    title: str,
    x_title: str,
    y_title: str,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    legend_corner: str | None = None,
) -> None:
    """The layout every figure shares: template, title, axis titles, ranges, legend inside."""
    fig.update_layout(template=_TEMPLATE, title={"text": title, "x": 0.5, "xanchor": "center"})
    fig.update_xaxes(title={"text": x_title}, range=x_range)
    fig.update_yaxes(title={"text": y_title}, range=y_range)
    if legend_corner:
        vertical, horizontal = legend_corner.split()
        fig.update_layout(
            legend={
                "x": {"left": 0.02, "center": 0.5, "right": 0.98}[horizontal],
                "y": {"bottom": 0.02, "top": 0.98}[vertical],
                "xanchor": horizontal,
                "yanchor": vertical,
                "bgcolor": "rgba(255,255,255,0.85)",
            }
        )


def _reference_line(x: list[float], y: list[float], name: str) -> go.Scatter:
    return go.Scatter(
        x=x,
        y=y,
        mode="lines",
        name=name,
        line={"color": REFERENCE_COLOR, "width": 1.5, "dash": "dash"},
        hoverinfo="skip",
    )


def _point_color(index: int) -> str:
    return POINT_COLORS[index % len(POINT_COLORS)]


def _point_marker(index: int, name: str, x: float | None, y: float | None) -> go.Scatter:
    return go.Scatter(
        x=[x],
        y=[y],
        mode="markers",
        name=name,
        marker={
            "color": _point_color(index),
            "symbol": POINT_SYMBOLS[index % len(POINT_SYMBOLS)],
            "size": 13,
            "line": {"color": CURVE_COLOR, "width": 1.5},
        },
        hovertemplate=f"{name}<extra></extra>",
    )


def _threshold_marker(x: float | None, y: float | None) -> go.Scatter:
    """A white ring at a threshold's point on a curve, tagged for the studio to move."""
    return go.Scatter(
        x=[x],
        y=[y],
        mode="markers",
        name="Threshold",
        meta=THRESHOLD_TAG,
        marker={
            "color": "#FFFFFF",
            "symbol": "circle",
            "size": 14,
            "line": {"color": CURVE_COLOR, "width": 3},
        },
        hoverinfo="skip",
    )


def _band_traces(band: Mapping[str, Sequence[float]] | None) -> list[go.Scatter]:
    """A 95% band as two traces: its lower edge, then its upper edge filled down to it."""
    if band is None:
        return []
    missing = [key for key in ("grid", "low", "high") if key not in band]
    if missing:
        raise ValueError(f"band lacks {', '.join(missing)}; pass what oof.curves gives")
    grid, low, high = (np.asarray(band[key], dtype=float) for key in ("grid", "low", "high"))
    if not grid.size or not grid.shape == low.shape == high.shape:
        raise ValueError("band needs one low and one high value per grid value")
    edge = {"color": BAND_COLOR, "width": 0}
    lower = go.Scatter(
        x=grid, y=low, mode="lines", line=edge, name=BAND_NAME, showlegend=False, hoverinfo="skip"
    )
    upper = go.Scatter(
        x=grid,
        y=high,
        mode="lines",
        line=edge,
        fill="tonexty",
        fillcolor=BAND_COLOR,
        name=BAND_NAME,
        hoverinfo="skip",
    )
    return [lower, upper]


def _add_vertical_line(
    fig: go.Figure,
    x: float,
    label: str,
    *,
    color: str = CURVE_COLOR,
    row: int = 0,
    tag: str | None = None,
) -> None:
    """A full-height line at x, labelled at the top; `row` staggers labels of nearby lines, and
    `tag` names the line and its label (the studio finds its threshold line so)."""
    fig.add_shape(
        name=tag,
        type="line",
        x0=x,
        x1=x,
        y0=0,
        y1=1,
        xref="x",
        yref="paper",
        line={"color": color, "width": 2, "dash": "dashdot"},
    )
    fig.add_annotation(
        name=tag,
        x=x,
        y=0.99 - 0.06 * row,
        xref="x",
        yref="paper",
        text=label,
        showarrow=False,
        xanchor="left",
        yanchor="top",
        font={"color": color, "size": 12},
        bgcolor="rgba(255,255,255,0.8)",
    )


def _checked_points(points: Mapping[str, float] | None) -> dict[str, float]:
    checked = {}
    for name, threshold in (points or {}).items():
        if not np.isfinite(threshold):
            raise ValueError(f"operating point {name!r} has threshold {threshold}; give a number")
        checked[str(name)] = float(threshold)
    return checked


def _checked_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is outside [0, 1], the probability axis")
    return float(threshold)


def _require_probabilities(p: np.ndarray) -> None:
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(
            "scores must be probabilities in [0, 1] for this figure; apply a sigmoid to logits"
        )


def _rates_label(counts: dict) -> str:
    return (
        f"threshold {counts['threshold']:.3f}: sensitivity {counts['sensitivity']:.2f}, "
        f"specificity {counts['specificity']:.2f}"
    )


def _called_stroke(threshold: float) -> str:
    if not np.isfinite(threshold):
        return "no scan called stroke"
    return f"stroke when score ≥ {threshold:.3f}"


def _class_counts(y: np.ndarray) -> str:
    return f"{int(np.sum(y == 1))} stroke, {int(np.sum(y == 0))} normal"


def _confusion_counts(counts: Mapping[str, float]) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp), checked to be whole, non-negative and not all zero."""
    missing = [key for key in ("tn", "fp", "fn", "tp") if key not in counts]
    if missing:
        raise ValueError(f"counts lack {', '.join(missing)}; pass what metrics.at_threshold gives")
    values = tuple(counts[key] for key in ("tn", "fp", "fn", "tp"))
    if any(int(v) != v or v < 0 for v in values) or sum(values) == 0:
        raise ValueError(f"counts must be whole numbers >= 0, not all zero: {values}")
    return tuple(int(v) for v in values)


def _cell_label(count: int, row_total: int, true_class: str) -> str:
    share = f"{count / row_total:.1%}" if row_total else "n/a"
    return f"<b>{count}</b><br>{share} of {true_class.lower()}"


def _histogram_bars(
    scores: np.ndarray, edges: np.ndarray, name: str, color: str, *, density: bool
) -> go.Bar:
    counts, _ = np.histogram(scores, bins=edges)
    widths = np.diff(edges)
    heights = counts / (counts.sum() * widths) if density and counts.sum() else counts
    return go.Bar(
        x=(edges[:-1] + edges[1:]) / 2,
        y=heights,
        width=widths,
        name=f"{name} (n = {scores.size})",
        marker={"color": color, "line": {"color": color, "width": 1}},
        opacity=0.55,
        customdata=np.column_stack([edges[:-1], edges[1:], counts]),
        hovertemplate=f"{name}: %{{customdata[2]}} scans with probability in "
        "[%{customdata[0]:.2f}, %{customdata[1]:.2f})<extra></extra>",
    )


def _reliability_points(
    bins: Mapping[str, Sequence[float | None]], name: str
) -> tuple[list[float], list[float], list[int]]:
    """The non-empty bins' (mean predicted, fraction positive, count), checked."""
    keys = ("bin_edges", "mean_predicted", "fraction_positive", "count")
    missing = [key for key in keys if key not in bins]
    if missing:
        raise ValueError(f"{name}: reliability bins lack {', '.join(missing)}")
    predicted, observed, count = bins["mean_predicted"], bins["fraction_positive"], bins["count"]
    if not len(predicted) == len(observed) == len(count) == len(bins["bin_edges"]) - 1:
        raise ValueError(
            f"{name}: need one mean_predicted, fraction_positive and count per bin "
            "and one more bin edge than bins"
        )
    kept = [
        (float(x), float(y), int(n or 0))
        for x, y, n in zip(predicted, observed, count, strict=True)
        if x is not None and y is not None and n
    ]
    if not kept:
        raise ValueError(f"{name}: every reliability bin is empty")
    if any(not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0) for x, y, _ in kept):
        raise ValueError(f"{name}: mean_predicted and fraction_positive must lie in [0, 1]")
    xs, ys, ns = zip(*kept, strict=True)
    return list(xs), list(ys), list(ns)


def _rates_by_threshold(
    y: np.ndarray, p: np.ndarray, thresholds: np.ndarray
) -> dict[str, np.ndarray]:
    """Sensitivity, specificity and F1 at every threshold at once (score >= threshold: stroke)."""
    positives, negatives = np.sort(p[y == 1]), np.sort(p[y == 0])
    tp = positives.size - np.searchsorted(positives, thresholds, side="left")
    fp = negatives.size - np.searchsorted(negatives, thresholds, side="left")
    fn = positives.size - tp
    tn = negatives.size - fp
    return {
        "Sensitivity": tp / positives.size,
        "Specificity": tn / negatives.size,
        "F1": 2 * tp / (2 * tp + fp + fn),  # never 0/0: both classes are present
    }


def _numbers(values, what: str) -> np.ndarray:
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"figure_to_png draws numeric {what} values only") from None


def _cell_edges(values, size: int) -> tuple[np.ndarray, list[str] | None]:
    """Cell edges for heatmap centres; category labels become positions 0, 1, ..."""
    if values is None:
        return np.arange(size + 1) - 0.5, None
    if all(isinstance(v, str) for v in values):
        return np.arange(size + 1) - 0.5, list(values)
    centres = _numbers(values, "heatmap axis")
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5]), None
    middles = (centres[:-1] + centres[1:]) / 2
    first, last = 2 * centres[0] - middles[0], 2 * centres[-1] - middles[-1]
    return np.concatenate([[first], middles, [last]]), None


def _colormap(colorscale, *, reverse: bool) -> LinearSegmentedColormap:
    stops = [(float(position), _color(color)) for position, color in colorscale]
    colormap = LinearSegmentedColormap.from_list("plotly", stops)
    return colormap.reversed() if reverse else colormap


def _color(value: str | None):
    """A Plotly colour ('#hex', a CSS name, 'rgb(...)' or 'rgba(...)') as matplotlib takes it."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*rgba?\(([^)]*)\)\s*", value)
    if not match:
        return value
    parts = [float(part) for part in match.group(1).split(",")]
    red, green, blue = (part / 255 for part in parts[:3])
    return (red, green, blue, parts[3] if len(parts) == 4 else 1.0)


def _text_box(background: str | None) -> dict | None:
    if background is None:
        return None
    return {"facecolor": _color(background), "edgecolor": "none", "pad": 1.0}


def _luminance(rgba: tuple[float, float, float, float]) -> float:
    red, green, blue, _ = to_rgba(rgba)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _dash(dash: str | None):
    if (dash or "solid") not in _DASHES:
        raise ValueError(f"figure_to_png does not draw dash style {dash!r}")
    return _DASHES[dash or "solid"]


def _transform(ax, xref: str | None, yref: str | None):
    """Data coordinates for 'x'/'y' references, axes fractions for 'paper' and 'domain'."""
    pick = {"x": ax.transData, "y": ax.transData}
    x_transform = pick.get(xref or "x", ax.transAxes)
    y_transform = pick.get(yref or "y", ax.transAxes)
    return blended_transform_factory(x_transform, y_transform)


def _legend_label(trace) -> str:
    return trace.name if trace.name and trace.showlegend is not False else "_nolegend_"


def _plain_text(text: str) -> str:
    """Plotly's HTML-ish text as plain text: <br> becomes a newline, other tags are dropped."""
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return text.replace("$", r"\$")  # a bare $ would start matplotlib mathtext
