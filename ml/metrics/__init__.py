"""Figures computed from labels and scores: ROC and PR, bootstrap intervals, operating points
and their thresholds, calibration. Pure functions of arrays; no torch."""

from __future__ import annotations

from ml.lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
        "roc_auc": "ml.metrics.scores",
        "pr_auc": "ml.metrics.scores",
        "at_threshold": "ml.metrics.scores",
        "bootstrap_ci": "ml.metrics.scores",
        "patient_scores": "ml.metrics.scores",
        "wilson_ci": "ml.metrics.scores",
    },
)
