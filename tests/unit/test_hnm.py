"""ml.train.mining: which examples count as hard, in each mining mode."""

from __future__ import annotations

import numpy as np
import pytest

from ml.train.mining import select_hard_examples

LABELS = np.array([1, 1, 0, 0, 1, 0])
PROBS = np.array([0.2, 0.9, 0.7, 0.1, 0.49, 0.5])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("false_negatives", [0, 4]), ("false_positives", [2, 5]), ("both", [0, 2, 4, 5])],
)
def test_selection_by_mode(mode: str, expected: list[int]) -> None:
    assert select_hard_examples(LABELS, PROBS, mode=mode).tolist() == expected


def test_threshold_moves_the_boundary() -> None:
    assert select_hard_examples(LABELS, PROBS, mode="false_negatives", threshold=0.95).tolist() == [
        0,
        1,
        4,
    ]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="false_negatives"):
        select_hard_examples(LABELS, PROBS, mode="all")
    with pytest.raises(ValueError, match="length"):
        select_hard_examples(LABELS, PROBS[:3], mode="both")
