"""Hard-example mining: which training slices the model currently gets wrong.

By default only stroke slices scored as normal (false negatives) are mined: missing a stroke is
the dangerous error. The caller gives the mined slices extra copies for the remaining epochs.
"""

from __future__ import annotations

import numpy as np

MODES = ("false_negatives", "false_positives", "both")


def select_hard_examples(
    labels: np.ndarray, probabilities: np.ndarray, *, mode: str, threshold: float = 0.5
) -> np.ndarray:
    """Positions (into `labels`) of the examples misclassified in the chosen direction."""
    if mode not in MODES:
        raise ValueError(f"unknown mining mode {mode!r}; choose one of {', '.join(MODES)}")
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=float)
    if labels.shape != probabilities.shape:
        raise ValueError("labels and probabilities differ in length")
    predicted = probabilities >= threshold
    missed_strokes = (labels == 1) & ~predicted
    false_alarms = (labels == 0) & predicted
    chosen = {
        "false_negatives": missed_strokes,
        "false_positives": false_alarms,
        "both": missed_strokes | false_alarms,
    }[mode]
    return np.flatnonzero(chosen)
