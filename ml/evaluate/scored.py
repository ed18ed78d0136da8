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

from ml.data.dataset import slice_order
from ml.evaluate.position import relative_positions
from ml.metrics import scores as metrics


@dataclass(frozen=True)
class Scored:
    """Labelled slices and their ensemble probabilities (one row per slice)."""

    paths: list[str]
    patients: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    folds: list[str] | None = None  # OOF only: the fold that scored each slice
    sources: list[str] | None = None  # the data source of each slice
    study_labels: np.ndarray | None = None  # the patient's label; None: the max of `labels`
    folder_labels: np.ndarray | None = None  # what the folders said; None: as study_labels
    slice_known: np.ndarray | None = None  # whether `labels` holds a real slice label
    positions: np.ndarray | None = None  # where each slice lies in its patient's stack, 0-1

    @classmethod
    def of_records(
        cls, records: list, probabilities: np.ndarray, folds: list[str] | None = None
    ) -> Scored:
        """Scored slices of dataset records (ml.data.dataset.SliceRecord), every label kept."""
        return cls(
            paths=[r.rel_path for r in records],
            patients=[r.patient_id for r in records],
            labels=np.array([r.label for r in records], dtype=int),
            probabilities=np.asarray(probabilities, dtype=float),
            folds=folds,
            sources=[r.source for r in records],
            study_labels=np.array([r.study for r in records], dtype=int),
            folder_labels=np.array([r.folder for r in records], dtype=int),
            slice_known=np.array([r.slice_known for r in records], dtype=bool),
            positions=relative_positions(
                [r.patient_id for r in records], [slice_order(r) for r in records]
            ),
        )

    def subset(self, rows: np.ndarray) -> Scored:
        """The same slices' rows `rows` (indices), every column kept."""

        def pick(values):
            if values is None:
                return None
            return values[rows] if isinstance(values, np.ndarray) else [values[i] for i in rows]

        return Scored(**{name: pick(getattr(self, name)) for name in self.__dataclass_fields__})

    def patient_level(self, aggregation: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Patient labels and scores, over the sources that have patients of both classes.

        A source whose patients are all positive (or all negative) counts at slice level only:
        pooling its patients with another hospital's would measure the hospital, not the model.
        """
        rows = patient_rows(self.patients, self.labels, self.sources)
        return metrics.patient_scores(
            [self.patients[i] for i in rows],
            self.labels[rows],
            self.probabilities[rows],
            aggregation,
        )


def patient_rows(patients: list[str], labels: np.ndarray, sources: list[str] | None) -> np.ndarray:
    """Indices of the slices whose source has patients of both classes (all, with one source
    or none named)."""
    if not sources or len(set(sources)) == 1:
        return np.arange(len(patients))
    classes: dict[str, set[int]] = {}
    positive: dict[str, int] = {}
    for patient, label in zip(patients, labels, strict=True):
        positive[patient] = max(positive.get(patient, 0), int(label))
    for patient, source in zip(patients, sources, strict=True):
        classes.setdefault(source, set()).add(positive[patient])
    return np.array([i for i, s in enumerate(sources) if len(classes[s]) == 2], dtype=int)


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
    """Scored slices from a predictions table (oof.csv, holdout.csv); `source` when present."""
    return Scored(
        paths=[r["path"] for r in rows],
        patients=[r["patient_id"] for r in rows],
        labels=np.array([int(r["label"]) for r in rows]),
        probabilities=np.array([float(r["probability"]) for r in rows]),
        sources=_column(rows, "source", str),
        study_labels=_array(rows, "study_label"),
        folder_labels=_array(rows, "folder_label"),
        slice_known=None if (known := _array(rows, "slice_known")) is None else known.astype(bool),
    )


def _column(rows: list[dict[str, str]], name: str, kind) -> list | None:
    return [kind(r[name]) for r in rows] if rows and rows[0].get(name) not in (None, "") else None


def _array(rows: list[dict[str, str]], name: str) -> np.ndarray | None:
    values = _column(rows, name, int)
    return None if values is None else np.array(values, dtype=int)


def read_rows(path: Path) -> list[dict[str, str]] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
