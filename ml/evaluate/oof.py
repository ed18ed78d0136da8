"""Out-of-fold analysis for moving a threshold: the numbers behind the threshold studio.

Everything here reads a bundle's `oof.csv`: each score came from a fold model that never trained
on that slice, so the rates at any threshold estimate what new patients would see (slightly
optimistically, since each fold's checkpoint was chosen on the same fold). A holdout or external
report is never read here: it must not take part in choosing a threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from ml.bundle import Bundle, read_rows
from ml.evaluate import figures as plots
from ml.evaluate.scored import scored_from_rows, with_intervals
from ml.metrics import scores as metrics
from ml.metrics.thresholds import uncertainty_band

LEVELS = ("slice", "patient")
GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class OofScores:
    """Labels and out-of-fold scores at one level; groups are the patients (resampling units)."""

    level: str
    labels: np.ndarray
    scores: np.ndarray
    groups: list[str]
    aggregation: str | None  # how slices became a patient score (patient level)


def oof_sources(bundle: Bundle) -> list[str]:
    """The data sources of the bundle's OOF slices, in order of appearance (one for most)."""
    rows = read_rows(bundle.path / "oof.csv") or []
    return list(dict.fromkeys(row.get("source") or "" for row in rows if row.get("source")))


class OneClassSource(ValueError):
    """A source whose patients all have one label: it has no patient-level figures."""


def oof_scores(bundle: Bundle, level: str, source: str | None = None) -> OofScores:
    """The bundle's OOF predictions at slice level, or per patient by its study aggregation;
    `source`: of that data source only (see oof_sources)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    rows = read_rows(bundle.path / "oof.csv")
    if not rows:
        raise ValueError(f"{bundle.path} has no out-of-fold predictions (oof.csv)")
    if source is not None:
        rows = [row for row in rows if row.get("source") == source]
        if not rows:
            raise ValueError(f"no out-of-fold slice comes from source {source!r}")
    scored = scored_from_rows(rows)
    if source is not None and level == "patient":
        positive: dict[str, int] = {}  # a patient is positive when any of its slices is
        for patient, label in zip(scored.patients, scored.labels, strict=True):
            positive[patient] = max(positive.get(patient, 0), int(label))
        if len(set(positive.values())) < 2:
            raise OneClassSource(
                f"every patient of {source} has the same label: its figures are at slice level only"
            )
    if level == "slice":
        return OofScores(level, scored.labels, scored.probabilities, scored.patients, None)
    aggregation = bundle.train_config().study_aggregation
    patients, labels, scores = scored.patient_level(aggregation)
    return OofScores(level, labels, scores, patients, aggregation)


def metrics_at(
    oof: OofScores, threshold: float, *, prevalence: float | None = None
) -> dict[str, Any]:
    """Counts and rates at `threshold` with 95% Wilson intervals.

    With `prevalence`, PPV and NPV are also given for a deployment whose share of stroke differs
    from the data's, from sensitivity and specificity by Bayes' rule.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    figures = with_intervals(metrics.at_threshold(oof.labels, oof.scores, threshold))
    figures["n"] = int(oof.labels.size)
    figures["prevalence_data"] = float(oof.labels.mean())
    if prevalence is not None:
        if not 0.0 < prevalence < 1.0:
            raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
        figures["at_prevalence"] = predictive_values(
            figures["sensitivity"], figures["specificity"], prevalence
        )
    return figures


def predictive_values(
    sensitivity: float | None, specificity: float | None, prevalence: float
) -> dict[str, float | None]:
    """PPV and NPV at another prevalence (Bayes' rule); None where undefined."""
    if sensitivity is None or specificity is None:
        return {"prevalence": prevalence, "ppv": None, "npv": None}
    true_pos = sensitivity * prevalence
    false_pos = (1.0 - specificity) * (1.0 - prevalence)
    true_neg = specificity * (1.0 - prevalence)
    false_neg = (1.0 - sensitivity) * prevalence
    return {
        "prevalence": prevalence,
        "ppv": true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else None,
        "npv": true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else None,
    }


def band_half_width(oof: OofScores, threshold: float, share: float) -> float:
    """The 'uncertain' band around a new threshold, measured on OOF data as training did."""
    return float(uncertainty_band(oof.labels, oof.scores, threshold, share=share)["half_width"])


def curves(oof: OofScores, *, n_resamples: int = 200, seed: int = 0) -> dict[str, Any]:
    """ROC and PR curves with 95% bootstrap bands (patients resampled), for plotting.

    Bands are pointwise percentiles on a fixed grid (TPR over FPR, precision over recall). They
    cost a few hundred curve fits, so callers compute them once per bundle and level and cache.
    """
    y, p = oof.labels, oof.scores
    fpr, tpr, roc_thresholds = roc_curve(y, p)
    precision, recall, pr_thresholds = precision_recall_curve(y, p)
    members: dict[str, list[int]] = {}
    for index, group in enumerate(oof.groups):
        members.setdefault(group, []).append(index)
    blocks = [np.array(v) for v in members.values()]
    rng = np.random.default_rng(seed)
    tprs, precisions = [], []
    for _ in range(n_resamples):
        index = np.concatenate([blocks[i] for i in rng.integers(0, len(blocks), len(blocks))])
        if len(np.unique(y[index])) < 2:
            continue
        f, t, _ = roc_curve(y[index], p[index])
        tprs.append(np.interp(GRID, f, t))
        pr, rc, _ = precision_recall_curve(y[index], p[index])
        precisions.append(np.interp(GRID, rc[::-1], pr[::-1]))
    return {
        "level": oof.level,
        "n_resamples": len(tprs),
        "roc": {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": np.minimum(roc_thresholds, 1.0).tolist(),
            "auc": metrics.roc_auc(y, p),
            "band": _band(tprs),
        },
        "pr": {
            "recall": recall.tolist(),
            "precision": precision.tolist(),
            "thresholds": pr_thresholds.tolist(),
            "auc": metrics.pr_auc(y, p),
            "band": _band(precisions),
        },
    }


def figures(
    oof: OofScores,
    oof_curves: Mapping[str, Any],
    *,
    threshold: float,
    points: Mapping[str, float] | None = None,
) -> dict[str, dict]:
    """The studio's ROC, PR and score figures as Plotly JSON, made by the report's functions.

    They are the figures a report draws for these scores, with the bands of `oof_curves` (what
    `curves` returns) and the studio's marker and line at `threshold`; the browser draws each
    once and then moves only those (tagged `figures.THRESHOLD_TAG`).
    """
    unit = "slices" if oof.level == "slice" else "patients"
    y, p = oof.labels, oof.scores
    built = {
        "roc": plots.roc_figure(
            y,
            p,
            points=points,
            band=oof_curves["roc"]["band"],
            threshold=threshold,
            title=f"ROC, {unit} (out-of-fold)",
        ),
        "pr": plots.pr_figure(
            y,
            p,
            points=points,
            band=oof_curves["pr"]["band"],
            threshold=threshold,
            title=f"PR, {unit} (out-of-fold)",
        ),
        "distribution": plots.distribution_figure(
            y, p, threshold=threshold, title=f"Probability by true class, {unit} (out-of-fold)"
        ),
    }
    return {name: plots.figure_json(fig) for name, fig in built.items()}


def _band(values: list[np.ndarray]) -> dict[str, list[float]]:
    stacked = np.vstack(values)
    return {
        "grid": GRID.tolist(),
        "low": np.percentile(stacked, 2.5, axis=0).tolist(),
        "high": np.percentile(stacked, 97.5, axis=0).tolist(),
    }
