"""Metrics as pure functions of (labels, scores); scikit-learn where it has the metric, except
ROC-AUC, computed from ranks: the same number as scikit-learn's without its per-call input checks,
which made the 1,000-resample bootstrap intervals of a report take most of a run's finish.

Each validates its inputs: equal lengths, labels 0/1, finite scores, and both classes present
where the metric needs them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score

AGGREGATIONS = ("mean", "max", "topk_mean", "noisy_or")


def validate_scores(y_true: Sequence[int], y_score: Sequence[float], *, both_classes: bool = True):
    """Labels and scores as arrays, or ValueError: the one definition of valid metric inputs."""
    y = np.asarray(y_true)
    p = np.asarray(y_score, dtype=float)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be 1-D of equal length")
    if y.size == 0:
        raise ValueError("no examples")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("scores must be finite")
    if both_classes and len(np.unique(y)) < 2:
        raise ValueError("both classes must be present")
    return y.astype(int), p


def roc_auc(y_true: Sequence[int], y_score: Sequence[float]) -> float:
    """The chance that a random positive scores above a random negative, ties counting half
    (the Mann-Whitney statistic: the area under the ROC curve)."""
    y, p = validate_scores(y_true, y_score)
    positives = int(y.sum())
    negatives = y.size - positives
    rank_sum = float(rankdata(p)[y == 1].sum())  # tied scores share their mean rank
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def pr_auc(y_true: Sequence[int], y_score: Sequence[float]) -> float:
    """Average precision: the area under the precision-recall curve, stroke as positive."""
    y, p = validate_scores(y_true, y_score)
    return float(average_precision_score(y, p))


def at_threshold(y_true: Sequence[int], y_score: Sequence[float], threshold: float) -> dict:
    """Counts and rates when scores >= threshold are called stroke."""
    y, p = validate_scores(y_true, y_score, both_classes=False)
    predicted = p >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    tn = int(np.sum(~predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": _ratio(tp + tn, y.size),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def wilson_ci(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion such as sensitivity (tp of tp + fn).

    Unlike the textbook normal interval it stays inside [0, 1] and does not collapse to a point
    at 0/n or n/n, which matters for the small counts of a stroke test set. None when n == 0,
    matching the None that `at_threshold` gives a rate without a denominator.
    """
    successes, n = operator.index(successes), operator.index(n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    proportion = successes / n
    denominator = 1.0 + z * z / n
    centre = (proportion + z * z / (2 * n)) / denominator
    half_width = (
        z * math.sqrt(proportion * (1.0 - proportion) / n + z * z / (4 * n * n)) / denominator
    )
    # At 0/n and n/n the bound is exactly 0 or 1; rounding would otherwise leave ~1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == n else min(1.0, centre + half_width)
    return low, high


def aggregate(scores: Sequence[float], method: str, *, k: int = 3) -> float:
    """One study score from slice scores."""
    p = np.asarray(scores, dtype=float)
    if p.size == 0:
        raise ValueError("no slice scores to aggregate")
    if method == "mean":
        return float(p.mean())
    if method == "max":
        return float(p.max())
    if method == "topk_mean":
        return float(np.sort(p)[-k:].mean())
    if method == "noisy_or":
        return float(1.0 - np.prod(1.0 - np.clip(p, 0.0, 1.0)))
    raise ValueError(f"unknown aggregation {method!r}; choose one of {', '.join(AGGREGATIONS)}")


def patient_scores(
    groups: Sequence[str], y_true: Sequence[int], y_score: Sequence[float], method: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(patients, patient labels, patient scores); a patient is stroke if any slice is."""
    y, p = validate_scores(y_true, y_score, both_classes=False)
    order: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        order.setdefault(group, []).append(index)
    patients = sorted(order)
    labels = np.array([y[order[g]].max() for g in patients])
    scores = np.array([aggregate(p[order[g]], method) for g in patients])
    return patients, labels, scores


def bootstrap_ci(
    y_true: Sequence[int],
    y_score: Sequence[float],
    groups: Sequence[str],
    metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of `metric`, resampling whole patients with replacement.

    Resampling slices would pretend that 30 near-identical slices are 30 independent cases.
    Resamples that lack a class are skipped.
    """
    y, p = validate_scores(y_true, y_score)
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    blocks = [np.array(v) for v in members.values()]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        picked = rng.integers(0, len(blocks), size=len(blocks))
        index = np.concatenate([blocks[i] for i in picked])
        if len(np.unique(y[index])) == 2:
            values.append(metric(y[index], p[index]))
    if not values:
        raise ValueError("no bootstrap resample held both classes")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)
