"""Operating points: which score counts as "stroke", chosen by a named policy.

Thresholds are chosen on out-of-fold (OOF) predictions only: every OOF score comes from a model
that never trained on that slice, so a threshold tuned on them carries over to new patients far
better than one tuned on training scores. A holdout, when there is one, is only scored at the
thresholds chosen here, never used to choose them.

Stroke is the positive class and a slice is called stroke when score >= threshold, the same
convention as `metrics.at_threshold`. Every policy looks only at thresholds equal to a distinct
score (plus, where "call nothing stroke" is a sensible answer, one just above the highest score),
because between two neighbouring scores every threshold gives the same calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from ml.metrics import scores as metrics

POLICIES = ("max_f1", "youden", "sensitivity_at", "specificity_at", "min_cost")
CHOSEN_ON = "out-of-fold predictions"
_TARGET_POLICIES = ("sensitivity_at", "specificity_at")
_RESERVED_KEYS = ("level", "chosen_on", "active", "points")


@dataclass(frozen=True)
class OperatingPoint:
    """One named threshold, the policy that chose it, and its counts and rates on the OOF data."""

    name: str
    policy: str
    threshold: float
    target: float | None = None
    cost_ratio: float | None = None
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "name": self.name,
            "policy": self.policy,
            "threshold": self.threshold,
            "target": self.target,
            "cost_ratio": self.cost_ratio,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatingPoint:
        """The inverse of `to_dict`; rejects a record that lacks a name, policy or threshold."""
        missing = [key for key in ("name", "policy", "threshold") if key not in d]
        if missing:
            raise ValueError(f"operating point {d!r} lacks {', '.join(missing)}")
        if d["policy"] not in POLICIES:
            raise ValueError(
                f"operating point {d['name']!r} has unknown policy {d['policy']!r}; "
                f"expected one of {', '.join(POLICIES)}"
            )
        return cls(
            name=str(d["name"]),
            policy=d["policy"],
            threshold=float(d["threshold"]),
            target=None if d.get("target") is None else float(d["target"]),
            cost_ratio=None if d.get("cost_ratio") is None else float(d["cost_ratio"]),
            metrics=dict(d.get("metrics") or {}),
        )


def choose_threshold(
    y_true: Sequence[int],
    y_score: Sequence[float],
    policy: str,
    *,
    target: float | None = None,
    cost_ratio: float | None = None,
) -> float:
    """The threshold that `policy` picks on OOF labels and scores.

    - `max_f1`: the distinct score with the highest F1 (ties: the lowest such score).
    - `youden`: the ROC threshold with the highest sensitivity + specificity - 1.
    - `sensitivity_at`: the highest threshold whose sensitivity is still >= `target`, i.e. the
      most specific point that meets the sensitivity target.
    - `specificity_at`: the lowest threshold whose specificity is >= `target`, i.e. the most
      sensitive point that meets the specificity target.
    - `min_cost`: the threshold with the lowest expected cost (cost_ratio * FN + FP) / N, where
      `cost_ratio` is what a missed stroke costs relative to a false alarm (ties: the higher).
    """
    y, p = metrics.validate_scores(y_true, y_score)
    _check_options(policy, target, cost_ratio)
    if policy == "max_f1":
        return _max_f1(y, p)
    if policy == "youden":
        return _youden(y, p)
    if policy == "sensitivity_at":
        return _at_sensitivity(y, p, target)
    if policy == "specificity_at":
        return _at_specificity(y, p, target)
    return _min_cost(y, p, cost_ratio)


def _check_options(policy: str, target: float | None, cost_ratio: float | None) -> None:
    """Each policy gets exactly the options it uses, so a misplaced option cannot pass silently."""
    if policy not in POLICIES:
        raise ValueError(
            f"unknown threshold policy {policy!r}; choose one of {', '.join(POLICIES)}"
        )
    if policy in _TARGET_POLICIES:
        if target is None:
            raise ValueError(f"policy {policy} needs a target, e.g. target=0.95")
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target must lie in (0, 1], got {target}")
    elif target is not None:
        raise ValueError(f"policy {policy} takes no target; only {' and '.join(_TARGET_POLICIES)}")
    if policy == "min_cost":
        if cost_ratio is None:
            raise ValueError(
                "policy min_cost needs cost_ratio (cost of a missed stroke / false alarm)"
            )
        if not (np.isfinite(cost_ratio) and cost_ratio > 0):
            raise ValueError(f"cost_ratio must be a positive number, got {cost_ratio}")
    elif cost_ratio is not None:
        raise ValueError(f"policy {policy} takes no cost_ratio; only min_cost does")


def _called_positive(y: np.ndarray, p: np.ndarray, candidates: np.ndarray):
    """(tp, fp) at each candidate threshold, by binary search instead of one pass per threshold."""
    positives = np.sort(p[y == 1])
    negatives = np.sort(p[y == 0])
    # searchsorted(side="left") counts the scores strictly below a threshold; the rest are called.
    tp = positives.size - np.searchsorted(positives, candidates, side="left")
    fp = negatives.size - np.searchsorted(negatives, candidates, side="left")
    return tp, fp


def _above_all(p: np.ndarray) -> float:
    """The smallest threshold above every score: calls nothing stroke."""
    return float(np.nextafter(p.max(), np.inf))


def _max_f1(y: np.ndarray, p: np.ndarray) -> float:
    candidates = np.unique(p)
    tp, fp = _called_positive(y, p, candidates)
    fn = int(y.sum()) - tp
    f1 = 2 * tp / (2 * tp + fp + fn)  # the denominator is >= the number of positives, never 0
    return float(candidates[int(np.argmax(f1))])


def _youden(y: np.ndarray, p: np.ndarray) -> float:
    fpr, tpr, thresholds = roc_curve(y, p)
    finite = np.isfinite(thresholds)
    best = np.argmax((tpr - fpr)[finite])
    return float(thresholds[finite][best])


def _at_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    candidates = np.unique(p)
    tp, _ = _called_positive(y, p, candidates)
    # Sensitivity falls as the threshold rises, and is 1 at the lowest score: a match exists.
    meets = np.flatnonzero(tp / int(y.sum()) >= target)
    return float(candidates[meets[-1]])


def _at_specificity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    candidates = np.append(np.unique(p), _above_all(p))
    _, fp = _called_positive(y, p, candidates)
    negatives = int((y == 0).sum())
    # Specificity rises with the threshold and is 1 above every score: a match exists.
    meets = np.flatnonzero((negatives - fp) / negatives >= target)
    return float(candidates[meets[0]])


def _min_cost(y: np.ndarray, p: np.ndarray, cost_ratio: float) -> float:
    candidates = np.append(np.unique(p), _above_all(p))
    tp, fp = _called_positive(y, p, candidates)
    cost = cost_ratio * (int(y.sum()) - tp) + fp
    # isclose, not ==: a fractional cost_ratio can leave equal costs a rounding error apart.
    ties = np.flatnonzero(np.isclose(cost, cost.min(), rtol=1e-12, atol=1e-12))
    return float(candidates[ties[-1]])


def expected_cost(
    y_true: Sequence[int], y_score: Sequence[float], threshold: float, *, cost_ratio: float
) -> float:
    """(cost_ratio * FN + FP) / N at `threshold`: the quantity `min_cost` minimises."""
    counts = metrics.at_threshold(y_true, y_score, threshold)
    return (cost_ratio * counts["fn"] + counts["fp"]) / len(np.asarray(y_true))


def point_name(policy: str, *, target: float | None = None, cost_ratio: float | None = None) -> str:
    """A readable, stable name: "max_f1", "sensitivity_0.95", "specificity_0.90", "min_cost_5"."""
    if policy == "sensitivity_at":
        return f"sensitivity_{_two_places(target)}"
    if policy == "specificity_at":
        return f"specificity_{_two_places(target)}"
    if policy == "min_cost":
        return f"min_cost_{cost_ratio:g}"
    return policy


def _two_places(value: float) -> str:
    """0.9 -> "0.90", but 0.975 keeps its third digit rather than colliding with 0.97 or 0.98."""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def standard_points(
    y_true: Sequence[int],
    y_score: Sequence[float],
    *,
    sensitivity_target: float = 0.95,
    specificity_target: float = 0.90,
    cost_ratio: float = 5.0,
) -> list[OperatingPoint]:
    """One operating point per policy, in POLICIES order, each with its OOF counts and rates."""
    options: dict[str, dict[str, float]] = {
        "max_f1": {},
        "youden": {},
        "sensitivity_at": {"target": sensitivity_target},
        "specificity_at": {"target": specificity_target},
        "min_cost": {"cost_ratio": cost_ratio},
    }
    points = []
    for policy in POLICIES:
        threshold = choose_threshold(y_true, y_score, policy, **options[policy])
        points.append(
            OperatingPoint(
                name=point_name(policy, **options[policy]),
                policy=policy,
                threshold=threshold,
                target=options[policy].get("target"),
                cost_ratio=options[policy].get("cost_ratio"),
                metrics=metrics.at_threshold(y_true, y_score, threshold),
            )
        )
    return points


def write_thresholds(
    path: Path,
    points: list[OperatingPoint],
    active: str,
    *,
    level: str = "slice",
    extra: dict | None = None,
) -> None:
    """thresholds.json: the operating points, which one is active, and that OOF chose them."""
    _check_active([point.name for point in points], active)
    clash = sorted(set(extra or {}) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra must not replace the keys {', '.join(clash)}")
    document = {
        "level": level,
        "chosen_on": CHOSEN_ON,
        "active": active,
        "points": [point.to_dict() for point in points],
        **(extra or {}),
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def read_thresholds(path: Path) -> tuple[list[OperatingPoint], str]:
    """(operating points, name of the active one) from a file `write_thresholds` wrote."""
    document = json.loads(Path(path).read_text())
    if not isinstance(document, dict) or "points" not in document or "active" not in document:
        raise ValueError(f"{path} is not a thresholds file: it needs 'points' and 'active'")
    points = [OperatingPoint.from_dict(d) for d in document["points"]]
    _check_active([point.name for point in points], document["active"])
    return points, document["active"]


def _check_active(names: list[str], active: str) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"operating point names must be unique, got {names}")
    if active not in names:
        raise ValueError(f"active point {active!r} is not one of {', '.join(names) or 'none'}")


def uncertainty_band(
    y_true: Sequence[int], y_score: Sequence[float], threshold: float, *, share: float = 0.2
) -> dict[str, Any]:
    """The band around `threshold` that holds the `share` of OOF slices nearest to it.

    Its half-width is read off the OOF data (the `share`-quantile of |score - threshold|), not
    fixed by hand, so it means the same thing for a sharp model and a hedging one. Accuracy inside
    and outside the band shows whether the band really is where the model errs more.
    """
    y, p = metrics.validate_scores(y_true, y_score, both_classes=False)
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    distance = np.abs(p - threshold)
    # inverted_cdf: the smallest half-width whose band holds at least `share` of the slices.
    half_width = float(np.quantile(distance, share, method="inverted_cdf"))
    inside = distance <= half_width
    correct = (p >= threshold) == (y == 1)
    return {
        "threshold": float(threshold),
        "half_width": half_width,
        "share": float(share),
        "accuracy_inside": _mean_or_none(correct[inside]),
        "accuracy_outside": _mean_or_none(correct[~inside]),
        "n_inside": int(inside.sum()),
    }


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def find_point(points: Sequence[OperatingPoint], name: str) -> OperatingPoint:
    """The operating point called `name`; ValueError naming the ones there are."""
    for point in points:
        if point.name == name:
            return point
    raise ValueError(
        f"unknown operating point {name!r}; there are {', '.join(p.name for p in points)}"
    )
