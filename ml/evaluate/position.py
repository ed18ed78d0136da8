"""How much of a slice score is only where the slice lies in the head?

Lesions are not spread evenly along a head: PHE-SICH's basal-ganglia haemorrhages lie in the
middle tenths of each patient's stack, and CT-ICH's bleeds in its upper half. A network can tell
the level of a slice from the anatomy it shows, so a high slice ROC-AUC may say "this is a
mid-brain slice" rather than "this slice bleeds". Two figures per source keep that apart, out of
fold:

- `baseline`: each slice scored by the share of lesion slices at its level (the same tenth of
  the patient's stack) among the other folds' slices of that source: what the level alone is
  worth;
- `matched`: the model's ROC-AUC over pairs of a lesion slice and a lesion-free slice at the
  same level (the same tenth of their stacks), every other pair left out: what the model tells
  apart beyond the level.

Both come with 95% intervals resampling patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.metrics.scores import bootstrap_ci, roc_auc

BINS = 10  # levels compared in `matched`: tenths of a patient's stack


def relative_positions(patients: Sequence[str], order: Sequence[Any]) -> np.ndarray:
    """(rank - 0.5) / count of each slice among its patient's slices, ranked by `order` (a
    sortable key per slice, e.g. ml.data.dataset.slice_order): 0 at one end of the head, 1 at
    the other."""
    positions = np.zeros(len(patients))
    members: dict[str, list[int]] = {}
    for index, patient in enumerate(patients):
        members.setdefault(patient, []).append(index)
    for rows in members.values():
        ranked = sorted(rows, key=lambda i: order[i])
        positions[ranked] = (np.arange(len(ranked)) + 0.5) / len(ranked)
    return positions


def baseline_scores(labels: np.ndarray, positions: np.ndarray, folds: Sequence[str]) -> np.ndarray:
    """Out-of-fold probability of a lesion from the slice's level alone: the share of lesion
    slices at that level (tenth of the stack) among the other folds' slices (NaN where those
    have no slice at that level)."""
    level = _level(positions)
    folds = np.asarray(folds)
    scores = np.full(len(labels), np.nan)
    for fold in np.unique(folds):
        train, scored = folds != fold, folds == fold
        counts = np.bincount(level[train], minlength=BINS)
        lesions = np.bincount(level[train], weights=labels[train], minlength=BINS)
        rate = np.divide(lesions, counts, out=np.full(BINS, np.nan), where=counts > 0)
        scores[scored] = rate[level[scored]]
    return scores


def matched_auc(labels: np.ndarray, scores: np.ndarray, positions: np.ndarray) -> float:
    """ROC-AUC over (lesion, lesion-free) pairs in the same tenth of their stacks; NaN when no
    tenth holds both."""
    level = _level(positions)
    concordant, pairs = 0.0, 0
    for band in np.unique(level):
        inside = level == band
        positive = scores[inside & (labels == 1)]
        negative = scores[inside & (labels == 0)]
        if len(positive) and len(negative):
            diff = positive[:, None] - negative[None, :]
            concordant += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
            pairs += diff.size
    return concordant / pairs if pairs else float("nan")


def position_figures(
    labels: np.ndarray,
    scores: np.ndarray,
    patients: Sequence[str],
    positions: np.ndarray,
    folds: Sequence[str],
    seed: int = 0,
) -> dict[str, Any] | None:
    """The two figures of one source's out-of-fold slices; None with one class."""
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return None
    baseline = baseline_scores(labels, positions, folds)
    known = ~np.isnan(baseline)
    groups = np.asarray(patients)
    # The level rides along in the score's integer part, so that a resample keeps it.
    coded = _level(positions) + np.clip(scores, 0.0, 1.0 - 1e-9)
    return {
        "baseline_roc_auc": _or_none(roc_auc, labels[known], baseline[known]),
        "baseline_roc_auc_ci95": _or_none(
            bootstrap_ci, labels[known], baseline[known], groups[known], seed=seed
        ),
        "matched_roc_auc": _or_none(matched_auc, labels, scores, positions),
        "matched_roc_auc_ci95": _or_none(
            bootstrap_ci, labels, coded, groups, _decoded_matched_auc, seed=seed
        ),
        "levels": BINS,
    }


def _level(positions: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(positions) * BINS).astype(int), BINS - 1)


def _decoded_matched_auc(labels: np.ndarray, coded: np.ndarray) -> float:
    level = np.floor(coded)
    return matched_auc(labels, coded - level, (level + 0.5) / BINS)


def _or_none(fn, *args, **kwargs) -> Any:
    try:
        value = fn(*args, **kwargs)
    except ValueError:
        return None
    if isinstance(value, tuple):
        return None if np.isnan(value).any() else [float(v) for v in value]
    return None if np.isnan(value) else float(value)
