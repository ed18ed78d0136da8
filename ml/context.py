"""2.5D input: a slice and its neighbours in the same patient, as the three network channels.

With `input_mode: neighbours` the channels hold slice k-1, k and k+1 of one patient, in slice
order, instead of one slice repeated three times. A slice at either end of a patient, and a slice
uploaded on its own, fills the missing neighbour with itself, so a single image still works (it
is then exactly the `slice` input). Training and every prediction build the stack here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

INPUT_MODES = ("slice", "neighbours")


def neighbour_rows(groups: Sequence[Hashable], order: Sequence[Any]) -> np.ndarray:
    """(N, 3) int rows: the previous slice, the slice itself and the next one in its group.

    `order` sorts the slices of one group (slice number, position, natural name key); the ends
    of a group repeat the slice itself.
    """
    if len(groups) != len(order):
        raise ValueError("groups and order must have one entry per slice")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for row, group in enumerate(groups):
        members[group].append(row)
    rows = np.repeat(np.arange(len(groups))[:, None], 3, axis=1)
    for group_rows in members.values():
        ranked = sorted(group_rows, key=lambda r: (order[r], r))
        for i, row in enumerate(ranked):
            rows[row, 0] = ranked[max(i - 1, 0)]
            rows[row, 2] = ranked[min(i + 1, len(ranked) - 1)]
    return rows


def stack_neighbours(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3): channel j is the first channel of image rows[:, j]."""
    return np.stack([np.asarray(images)[rows[:, j], ..., 0] for j in range(3)], axis=-1)


def network_images(
    images: np.ndarray, groups: Sequence[Hashable], order: Sequence[Any], mode: str
) -> np.ndarray:
    """The cached per-slice images as the network sees them under `mode`."""
    if mode == "slice":
        return images
    if mode == "neighbours":
        return stack_neighbours(images, neighbour_rows(groups, order))
    raise ValueError(f"unknown input mode {mode!r}; choose one of {', '.join(INPUT_MODES)}")
