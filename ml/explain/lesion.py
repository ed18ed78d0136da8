"""Does the heat map point at the lesion? Grad-CAM measured against outlined lesion masks.

For every lesion slice with a mask that a run scored out of fold, the fold model that did not
train on it draws its Grad-CAM (one view), and two figures are kept: whether the map's hottest
pixel lies inside the lesion, and the share of the map's heat that falls inside it (next to the
share of the image the lesion covers, which is what a map with no idea of the lesion would get).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.data.masks import mask_in_frame
from ml.data.transforms import to_tensor
from ml.explain.cam import explain
from ml.metrics.scores import wilson_ci


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
