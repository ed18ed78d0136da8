"""Does the heat map point at the lesion? Grad-CAM measured against outlined lesion masks.

For every lesion slice with a mask that a run scored out of fold, the fold model that did not
train on it draws its Grad-CAM (one view), and two figures are kept: whether the map's hottest
pixel lies inside the lesion, and the share of the map's heat that falls inside it (next to the
share of the image the lesion covers, which is what a map with no idea of the lesion would get).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ml.data.transforms import to_tensor
from ml.explain.cam import explain
from ml.metrics.scores import wilson_ci

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


def hit(heatmap: np.ndarray, mask: np.ndarray) -> tuple[bool, float]:
    """(the hottest pixel lies in the lesion, share of the heat inside the lesion)."""
    total = float(heatmap.sum())
    if total <= 0:
        return False, 0.0
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return bool(mask[peak]), float(heatmap[mask].sum() / total)


def cam_in_lesion(
    models: dict[int, Any],
    images: np.ndarray,
    records: Sequence[Any],
    parts: np.ndarray,
    frames: np.ndarray,
    *,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    limit: int,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Peak-in-lesion share and heat inside the lesion, out of fold, per source; None when no
    scored lesion slice has a mask. `models` maps a fold to its model (eval mode)."""
    rows = [
        i
        for i, r in enumerate(records)
        if r.mask is not None and r.slice_known and r.label == 1 and parts[i] in models
    ]
    if not rows or limit <= 0:
        return None
    if len(rows) > limit:
        rows = sorted(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    size = images.shape[1]
    found: dict[str, list[tuple[bool, float, float]]] = {}
    for i in rows:
        x = to_tensor(np.asarray(images[i]), in_chans, mean, std)
        heatmap = explain([models[int(parts[i])]], x, method="gradcam", views=("identity",))
        mask = mask_in_frame(records[i].mask, frames[i], size)
        peak, inside = hit(heatmap, mask)
        found.setdefault(records[i].source, []).append((peak, inside, float(mask.mean())))
    return {
        "method": "gradcam, one view, the fold model that did not train on the slice",
        "by_source": {source: _summary(values) for source, values in sorted(found.items())},
    }


def _summary(values: list[tuple[bool, float, float]]) -> dict[str, Any]:
    peaks = sum(peak for peak, _, _ in values)
    low_high = wilson_ci(peaks, len(values))
    return {
        "slices": len(values),
        "peak_in_lesion": peaks / len(values),
        "peak_in_lesion_ci95": list(low_high) if low_high else None,
        "heat_inside": float(np.mean([inside for _, inside, _ in values])),
        "lesion_area": float(np.mean([area for _, _, area in values])),
    }
