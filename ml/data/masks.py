"""Lesion masks as areas, carried into the network's frame: for measuring where Grad-CAM points
and for training a lesion map beside the classifier (`mask_loss_weight`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

OUTLINE_GAP = 5  # px: gaps in a drawn outline up to this wide are bridged before filling


def lesion_region(mask: np.ndarray) -> np.ndarray:
    """The lesion as an area. PHE-SICH's masks are drawn outlines, often open arcs, not filled
    regions: each outline (its pieces joined over gaps of up to OUTLINE_GAP px) is filled by its
    convex hull. A filled mask stays filled (and gains its concavities)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    kernel = np.ones((OUTLINE_GAP, OUTLINE_GAP), np.uint8)
    count, pieces = cv2.connectedComponents(cv2.dilate(mask.astype(np.uint8), kernel))
    region = mask.astype(np.uint8)
    for k in range(1, count):
        points = np.argwhere((pieces == k) & mask)[:, ::-1].astype(np.int32)  # (x, y)
        cv2.fillPoly(region, [cv2.convexHull(points)], 1)
    return region.astype(bool)


def mask_in_frame(mask_path: Path, frame: Sequence[float], size: int) -> np.ndarray:
    """A lesion mask of the decoded slice, filled (lesion_region) and carried into the network's
    input (bool size x size) by the slice's frame (ml.data.cache.network_frame): crop to the
    head, pad, resize."""
    with Image.open(mask_path) as image:
        mask = lesion_region(np.asarray(image.convert("L")) > 0)
    scale, shift_x, shift_y = (float(v) for v in frame)
    matrix = np.float32([[scale, 0.0, shift_x], [0.0, scale, shift_y]])
    covered = cv2.warpAffine(mask.astype(np.float32), matrix, (size, size), flags=cv2.INTER_LINEAR)
    inside = covered >= 0.5
    if mask.any() and not inside.any():  # a lesion smaller than a network pixel keeps its pixel
        inside = covered >= covered.max()
    return inside


def lesion_masks(
    records: Sequence[Any], frames: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, size, size) lesion masks in the network's frame, bool (N,) whether the record
    has a mask). A record without a mask gets an empty one, marked unknown: it says nothing of
    where a lesion is. A slice with a mask and no lesion is an empty, known mask."""
    masks = np.zeros((len(records), size, size), dtype=np.uint8)
    known = np.array([r.mask is not None for r in records], dtype=bool)
    for i in np.flatnonzero(known):
        masks[i] = mask_in_frame(records[i].mask, frames[i], size)
    return masks, known
