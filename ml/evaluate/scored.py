"""Scored slices: labels and ensemble probabilities as a bundle stores them (oof.csv,
predictions.csv), read back, and counts at a threshold with their intervals.

The threshold studio reads these; nothing here draws or writes a report.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.metrics import scores as metrics


@dataclass(frozen=True)
class Scored:
    """Labelled slices and their ensemble probabilities (one row per slice)."""

    paths: list[str]
    patients: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    folds: list[str] | None = None  # OOF only: the fold that scored each slice

    def patient_level(self, aggregation: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        return metrics.patient_scores(self.patients, self.labels, self.probabilities, aggregation)


def with_intervals(counts: dict[str, Any]) -> dict[str, Any]:
    """`metrics.at_threshold` counts with 95% Wilson intervals for each rate."""
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    pairs = {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
        "accuracy": (tp + tn, tp + fp + tn + fn),
    }
    intervals = {name: metrics.wilson_ci(k, n) for name, (k, n) in pairs.items()}
    return {**counts, "ci95": {k: list(v) if v else None for k, v in intervals.items()}}


def scored_from_rows(rows: list[dict[str, str]]) -> Scored:
    return Scored(
        paths=[r["path"] for r in rows],
        patients=[r["patient_id"] for r in rows],
        labels=np.array([int(r["label"]) for r in rows]),
        probabilities=np.array([float(r["probability"]) for r in rows]),
    )


def read_rows(path: Path) -> list[dict[str, str]] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
