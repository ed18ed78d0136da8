"""Does the heat map point at the lesion? Grad-CAM measured against outlined lesion masks.

For every lesion slice with a mask that a run scored out of fold, the fold model that did not
train on it draws its Grad-CAM (one view), and two figures are kept: whether the map's hottest
pixel lies inside the lesion, and the share of the map's heat that falls inside it (next to the
share of the image the lesion covers, which is what a map with no idea of the lesion would get).
Held-out patients are drawn by the whole ensemble. Every CAM layer is measured, so that the
layer a bundle draws from is chosen on evidence from more than one run.

Beside each layer's figure stands its ceiling: the peak-in-lesion share of a perfect map on
that layer's grid (the mask itself averaged to the grid and drawn as a CAM is, bilinear). A map
on a 12 x 12 grid cannot put its peak in a lesion smaller than a cell more often than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from ml.data.masks import mask_in_frame
from ml.data.splits import HOLDOUT
from ml.data.transforms import to_tensor
from ml.explain.cam import LAYERS, explain, target_layer
from ml.metrics.scores import wilson_ci


def hit(heatmap: np.ndarray, mask: np.ndarray) -> tuple[bool, float]:
    """(the hottest pixel lies in the lesion, share of the heat inside the lesion)."""
    total = float(heatmap.sum())
    if total <= 0:
        return False, 0.0
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return bool(mask[peak]), float(heatmap[mask].sum() / total)


def ceiling(mask: np.ndarray, grid: tuple[int, int]) -> bool:
    """Whether the best map on `grid` (the mask's share of each cell, upsampled bilinearly as
    Grad-CAM's maps are) puts its hottest pixel in the lesion."""
    height, width = mask.shape
    cells = cv2.resize(mask.astype(np.float32), grid[::-1], interpolation=cv2.INTER_AREA)
    drawn = cv2.resize(cells, (width, height), interpolation=cv2.INTER_LINEAR)
    return hit(drawn, mask)[0]


def layer_grid(model: Any, layer: str, x: torch.Tensor) -> tuple[int, int]:
    """(rows, columns) of the feature map `layer` names for an input like `x` (C, H, W)."""
    shapes: list[tuple[int, int]] = []
    hook = target_layer(model, layer).register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple(out.shape[-2:]))
    )
    try:
        with torch.no_grad():
            model(x[None].float())
    finally:
        hook.remove()
    return shapes[0]


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
    layer: str = "last",
    seed: int = 0,
) -> dict[str, Any] | None:
    """Peak-in-lesion share and heat inside the lesion per source, at every CAM layer; None when
    no scored lesion slice has a mask. `models` maps a fold to its model (eval mode).

    Out of fold, each slice is drawn by the fold model that did not train on it; held-out
    patients (part HOLDOUT), when there are any, by the ensemble of all fold models, as the
    product would draw them. `by_source` gives `layer`'s figures (the layer the bundle draws);
    `by_layer` every layer's, so that a bundle carries the comparison (LAYERS).
    """
    layers = _drawable_layers(next(iter(models.values())))
    found: dict[str, Any] = {}
    out_of_fold = _lesion_rows(records, [parts[i] in models for i in range(len(records))])
    held_out = _lesion_rows(records, [parts[i] == HOLDOUT for i in range(len(records))])
    for name, rows, draw in (
        ("out_of_fold", out_of_fold, lambda i: [models[int(parts[i])]]),
        ("holdout", held_out, lambda i: list(models.values())),
    ):
        if not rows or limit <= 0:
            continue
        if len(rows) > limit:
            rows = sorted(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
        size = images.shape[1]
        by_layer: dict[str, dict[str, list]] = {candidate: {} for candidate in layers}
        grids: dict[str, tuple[int, int]] = {}
        for i in rows:
            x = to_tensor(np.asarray(images[i]), in_chans, mean, std)
            mask = mask_in_frame(records[i].mask, frames[i], size)
            for candidate in layers:
                if candidate not in grids:
                    grids[candidate] = layer_grid(draw(i)[0], candidate, x)
                heatmap = explain(draw(i), x, views=("identity",), layer=candidate)
                peak, inside = hit(heatmap, mask)
                by_layer[candidate].setdefault(records[i].source, []).append(
                    (peak, inside, float(mask.mean()), ceiling(mask, grids[candidate]))
                )
        found[name] = {
            candidate: {
                source: {**_summary(v), "grid": list(grids[candidate])}
                for source, v in sorted(sources.items())
            }
            for candidate, sources in by_layer.items()
        }
    if "out_of_fold" not in found or layer not in layers:
        return None
    summary: dict[str, Any] = {
        "method": "gradcam, one view, the fold model that did not train on the slice",
        "layer": layer,
        "by_source": found["out_of_fold"][layer],
        "by_layer": found["out_of_fold"],
    }
    if "holdout" in found:
        summary["holdout"] = {
            "method": "gradcam, one view, the ensemble of every fold model",
            "by_source": found["holdout"][layer],
            "by_layer": found["holdout"],
        }
    return summary


def _drawable_layers(model: Any) -> list[str]:
    """The CAM layers this backbone has (a transformer has none)."""
    found = []
    for layer in LAYERS:
        try:
            target_layer(model, layer)
        except ValueError:
            continue
        found.append(layer)
    return found


def _lesion_rows(records: Sequence[Any], scored: Sequence[bool]) -> list[int]:
    """Rows of scored lesion slices that have a mask."""
    return [
        i
        for i, r in enumerate(records)
        if scored[i] and r.mask is not None and r.slice_known and r.label == 1
    ]


def _summary(values: list[tuple[bool, float, float, bool]]) -> dict[str, Any]:
    peaks = sum(peak for peak, *_ in values)
    low_high = wilson_ci(peaks, len(values))
    return {
        "slices": len(values),
        "peak_in_lesion": peaks / len(values),
        "peak_in_lesion_ci95": list(low_high) if low_high else None,
        "peak_in_lesion_ceiling": sum(best for *_, best in values) / len(values),
        "heat_inside": float(np.mean([inside for _, inside, _, _ in values])),
        "lesion_area": float(np.mean([area for _, _, area, _ in values])),
    }
