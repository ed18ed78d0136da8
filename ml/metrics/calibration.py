"""Calibration: making a score of 0.8 mean "stroke about 8 times in 10".

A calibrator is fitted on out-of-fold (OOF) predictions, the only scores that behave like scores
on new patients. Its quality is reported on data it was not fitted to: `cross_fit` refits it
with each fold left out and calibrates that fold, so the "after" figures in
`calibration_report` never come from slices whose labels the calibrator saw. The calibrator kept
for later use is fitted on all OOF data.

Both methods act on the logit of the score, p_cal = sigmoid(a * logit(p) + b): `temperature`
fits a alone (a = 1 / T > 0, so the ranking and the ROC-AUC stay as they were), `platt` fits a
and b, which also corrects a model that calls stroke too often or too rarely overall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

from ml.metrics import scores as metrics

METHODS = ("none", "temperature", "platt")
FITTED_ON = "out-of-fold predictions"
EVALUATED_ON = "cross-fitted over folds"
CLIP = 1e-6
# Bounds keep a fit on perfectly separated OOF scores from running off to infinity; with scores
# clipped to [1e-6, 1 - 1e-6] (|logit| <= 13.8) a slope of 100 is already a hard step.
_SLOPE_BOUND = 100.0
_SHIFT_BOUND = 100.0


@dataclass(frozen=True)
class Calibrator:
    """p_cal = sigmoid(a * logit(p) + b); `none` leaves scores as they are."""

    method: str
    a: float = 1.0
    b: float = 0.0

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not (np.isfinite(self.a) and np.isfinite(self.b)):
            raise ValueError(f"calibrator parameters must be finite, got a={self.a}, b={self.b}")
        if self.method == "none" and (self.a, self.b) != (1.0, 0.0):
            raise ValueError("method none takes no parameters: a must be 1 and b 0")
        if self.method == "temperature" and (self.a <= 0 or self.b != 0.0):
            raise ValueError("method temperature needs a > 0 (a = 1/T) and b = 0")

    def apply(self, p: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated scores; inputs are clipped to [1e-6, 1 - 1e-6] so that logit stays finite."""
        scores = _probabilities(p)
        if self.method == "none":
            return scores.copy()
        z = logit(np.clip(scores, CLIP, 1.0 - CLIP))
        return expit(self.a * z + self.b)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {"method": self.method, "a": float(self.a), "b": float(self.b)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """The inverse of `to_dict`; missing a or b take their identity values."""
        if "method" not in d:
            raise ValueError(f"calibrator {d!r} lacks a method")
        return cls(method=d["method"], a=float(d.get("a", 1.0)), b=float(d.get("b", 0.0)))


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(
            f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}"
        )


def _probabilities(p: Sequence[float] | np.ndarray) -> np.ndarray:
    scores = np.asarray(p, dtype=float)
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if ((scores < 0.0) | (scores > 1.0)).any():
        raise ValueError("scores must be probabilities in [0, 1]")
    return scores


def _validate(y_true: Sequence[int], y_score: Sequence[float], *, both_classes: bool):
    """metrics' checks, plus scores that are probabilities."""
    y, p = metrics.validate_scores(y_true, y_score, both_classes=both_classes)
    return y, _probabilities(p)


def fit(y_true: Sequence[int], y_score: Sequence[float], method: str) -> Calibrator:
    """The calibrator of `method` that minimises the negative log-likelihood of the labels."""
    _check_method(method)
    y, p = _validate(y_true, y_score, both_classes=True)
    if method == "none":
        return Calibrator("none")
    z = logit(np.clip(p, CLIP, 1.0 - CLIP))
    if method == "temperature":
        (a,) = _minimise_nll(z, y, start=[1.0], bounds=[(1.0 / _SLOPE_BOUND, _SLOPE_BOUND)])
        return Calibrator("temperature", a=a)
    a, b = _minimise_nll(
        z,
        y,
        start=[1.0, 0.0],
        bounds=[(-_SLOPE_BOUND, _SLOPE_BOUND), (-_SHIFT_BOUND, _SHIFT_BOUND)],
    )
    return Calibrator("platt", a=a, b=b)


def _minimise_nll(
    z: np.ndarray, y: np.ndarray, *, start: list[float], bounds: list[tuple[float, float]]
) -> list[float]:
    """Mean NLL of sigmoid(a * z [+ b]) by L-BFGS-B; it is convex in (a, b), so one start does."""
    with_shift = len(start) == 2

    def nll_and_gradient(params: np.ndarray) -> tuple[float, np.ndarray]:
        s = params[0] * z + (params[1] if with_shift else 0.0)
        # log(1 + e^s) - y * s, written with logaddexp so large |s| cannot overflow.
        nll = float(np.mean(np.logaddexp(0.0, s) - y * s))
        residual = expit(s) - y
        gradient = [np.mean(residual * z)] + ([np.mean(residual)] if with_shift else [])
        return nll, np.array(gradient)

    result = minimize(nll_and_gradient, np.array(start), jac=True, method="L-BFGS-B", bounds=bounds)
    if not np.all(np.isfinite(result.x)):
        raise RuntimeError(f"calibration fit failed: {result.message}")
    return [float(value) for value in result.x]


def cross_fit(
    y_true: Sequence[int], y_score: Sequence[float], folds: Sequence[Any], method: str
) -> np.ndarray:
    """Calibrated scores in input order, each fold calibrated by a fit on the other folds only."""
    y, p = _validate(y_true, y_score, both_classes=True)
    fold_ids = np.asarray(folds)
    if fold_ids.shape != y.shape:
        raise ValueError(f"folds {fold_ids.shape} must match the {y.size} labels and scores")
    distinct = np.unique(fold_ids)
    if distinct.size < 2:
        raise ValueError("cross-fitting needs at least two folds")
    calibrated = np.empty_like(p)
    for fold in distinct:
        held_out = fold_ids == fold
        calibrator = fit(y[~held_out], p[~held_out], method)
        calibrated[held_out] = calibrator.apply(p[held_out])
    return calibrated


def brier(y_true: Sequence[int], y_score: Sequence[float]) -> float:
    """Mean squared difference between score and label: lower is better, 0.25 is a coin flip."""
    y, p = _validate(y_true, y_score, both_classes=False)
    return float(np.mean((p - y) ** 2))


def _binned(y: np.ndarray, p: np.ndarray, n_bins: int):
    """(edges, count, mean score, fraction positive) over equal-width bins of [0, 1]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are [edge_i, edge_i+1); the last one also holds a score of exactly 1.
    index = np.digitize(p, edges[1:-1])
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=p, minlength=n_bins) / count
        fraction_positive = np.bincount(index, weights=y, minlength=n_bins) / count
    return edges, count, mean_predicted, fraction_positive


def ece(y_true: Sequence[int], y_score: Sequence[float], *, n_bins: int = 10) -> float:
    """Expected calibration error: |mean score - fraction positive| per bin, weighted by count."""
    y, p = _validate(y_true, y_score, both_classes=False)
    _, count, mean_predicted, fraction_positive = _binned(y, p, n_bins)
    filled = count > 0
    gaps = np.abs(mean_predicted[filled] - fraction_positive[filled])
    return float(np.sum(count[filled] * gaps) / y.size)


def reliability(y_true: Sequence[int], y_score: Sequence[float], *, n_bins: int = 10) -> dict:
    """The reliability diagram's data, one entry per bin; None where a bin is empty."""
    y, p = _validate(y_true, y_score, both_classes=False)
    edges, count, mean_predicted, fraction_positive = _binned(y, p, n_bins)
    filled = count > 0
    return {
        "bin_edges": edges.tolist(),
        "mean_predicted": _per_bin(mean_predicted, filled),
        "fraction_positive": _per_bin(fraction_positive, filled),
        "count": count.tolist(),
    }


def _per_bin(values: np.ndarray, filled: np.ndarray) -> list[float | None]:
    return [float(v) if f else None for v, f in zip(values, filled, strict=True)]


def _figures(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {"ece": ece(y, p), "brier": brier(y, p), "reliability": reliability(y, p)}


def calibration_report(
    y_true: Sequence[int], y_score: Sequence[float], folds: Sequence[Any], method: str
) -> dict[str, Any]:
    """Calibration before and after, the "after" cross-fitted, plus the calibrator to keep."""
    _check_method(method)
    y, p = _validate(y_true, y_score, both_classes=True)
    return {
        "method": method,
        "fitted_on": FITTED_ON,
        "evaluated_on": EVALUATED_ON,
        "before": _figures(y, p),
        "after": _figures(y, cross_fit(y, p, folds, method)),
        "calibrator": fit(y, p, method).to_dict(),
    }
