"""ml.evaluate.position: what the slice's level alone is worth, and what a score adds beyond it."""

from __future__ import annotations

import numpy as np
import pytest

from ml.evaluate.position import baseline_scores, matched_auc, position_figures, relative_positions


def test_positions_follow_each_patients_slice_order() -> None:
    patients = ["a", "b", "a", "a", "b"]
    order = [3, 1, 1, 2, 2]
    assert relative_positions(patients, order) == pytest.approx([5 / 6, 1 / 4, 1 / 6, 3 / 6, 3 / 4])


def level_world(seed: int = 0):
    """40 patients of 20 slices; lesions only in the middle tenths, on half of those slices."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(40)], 20)
    positions = relative_positions(list(patients), list(np.tile(np.arange(20), 40)))
    middle = (positions > 0.4) & (positions < 0.6)
    labels = (middle & (rng.random(len(positions)) < 0.5)).astype(int)
    folds = [str(int(p[1:]) % 5 + 1) for p in patients]
    return labels, positions, patients, folds, middle, rng


def test_a_score_that_only_knows_the_level_adds_nothing_beyond_it() -> None:
    labels, positions, patients, folds, middle, rng = level_world()
    knows_level = middle + 0.01 * rng.random(len(labels))
    figures = position_figures(labels, knows_level, patients, positions, folds)
    assert figures["baseline_roc_auc"] > 0.85  # the level alone goes far here
    assert figures["matched_roc_auc"] == pytest.approx(0.5, abs=0.08)
    sees_lesion = 0.5 * labels + 0.3 * middle + 0.1 * rng.random(len(labels))
    seen = position_figures(labels, sees_lesion, patients, positions, folds)
    assert seen["matched_roc_auc"] == 1.0 and seen["matched_roc_auc_ci95"] == [1.0, 1.0]
    low, high = figures["baseline_roc_auc_ci95"]
    assert low < figures["baseline_roc_auc"] < high


def test_the_baseline_is_fitted_on_the_other_folds_only() -> None:
    labels = np.array([1, 0, 1, 0])
    positions = np.array([0.05, 0.05, 0.95, 0.95])
    scores = baseline_scores(labels, positions, ["1", "2", "1", "2"])
    # Each slice is scored by the other fold's share at its level, never by its own label.
    assert scores == pytest.approx([0.0, 1.0, 0.0, 1.0])
    assert np.isnan(matched_auc(np.array([1, 0]), np.array([0.9, 0.1]), np.array([0.05, 0.95])))
    assert position_figures(np.zeros(4, int), scores, list("abcd"), positions, list("1212")) is None
