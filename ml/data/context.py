"""2.5D input: a slice and its neighbours in the same patient, as the three network channels.

With `input_mode: neighbours` the channels hold slice k-1, k and k+1 of one patient, in slice
order, instead of one slice repeated three times. A slice at either end of a patient, and a slice
uploaded on its own, fills the missing neighbour with itself, so a single image still works (it
is then exactly the `slice` input). Training and every prediction build the stack here.

Cropped to the head, each slice has its own box, so under `neighbours` the three channels come
at slightly different scales and offsets. `neighbours_aligned` redraws both neighbours in the
middle slice's frame first, so one pixel is one place in all three channels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

import cv2
import numpy as np

INPUT_MODES = ("slice", "neighbours", "neighbours_aligned")


def uses_neighbours(mode: str) -> bool:
    return mode in ("neighbours", "neighbours_aligned")


def align(image: np.ndarray, frame: Sequence[float], into: Sequence[float]) -> np.ndarray:
    """uint8 (H, W): `image`, drawn in `frame`, redrawn in the frame `into` (same size).

    Frames are (scale, x shift, y shift) from `ml.data.cache.network_frame`; what falls outside the
    image's own crop is air (0).
    """
    ratio = frame[0] / into[0]
    back = np.array(  # from a pixel of the result to the pixel of `image` it shows
        [[ratio, 0.0, frame[1] - ratio * into[1]], [0.0, ratio, frame[2] - ratio * into[2]]]
    )
    height, width = image.shape[:2]
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        back,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


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


def stack_neighbours(
    images: np.ndarray, rows: np.ndarray, frames: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (N, H, W, 3): channel j is the first channel of image rows[:, j].

    With `frames` (one per image), channels 0 and 2 are redrawn in the frame of channel 1.
    """
    images = np.asarray(images)
    stacked = np.stack([images[rows[:, j], ..., 0] for j in range(3)], axis=-1)
    if frames is None:
        return stacked
    for n, (before, middle, after) in enumerate(rows):
        for channel, row in ((0, before), (2, after)):
            if row != middle and not np.array_equal(frames[row], frames[middle]):
                stacked[n, ..., channel] = align(images[row, ..., 0], frames[row], frames[middle])
    return stacked


def network_images(
    images: np.ndarray,
    groups: Sequence[Hashable],
    order: Sequence[Any],
    mode: str,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """The cached per-slice images as the network sees them under `mode`."""
    if mode == "slice":
        return images
    if mode == "neighbours":
        return stack_neighbours(images, neighbour_rows(groups, order))
    if mode == "neighbours_aligned":
        if frames is None:
            raise ValueError("input_mode=neighbours_aligned needs each slice's frame")
        return stack_neighbours(images, neighbour_rows(groups, order), np.asarray(frames))
    raise ValueError(f"unknown input mode {mode!r}; choose one of {', '.join(INPUT_MODES)}")
