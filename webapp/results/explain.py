"""Grad-CAM of a stored slice, made on demand by the bundle that made its prediction; cached."""

from __future__ import annotations

from pathlib import Path

from webapp import storage
from webapp.bundle_store import using_predictor
from webapp.extensions import db
from webapp.models import Prediction, SliceResult

METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "eigencam": "EigenCAM"}


class CamUnavailable(RuntimeError):
    """The heat map cannot be made here; the message says why."""


def cam_path(slice_result: SliceResult, method: str) -> Path:
    return storage.cache_path(slice_result.stored_name, f"cam-{method}.png")


def ensure_cam(prediction: Prediction, slice_result: SliceResult, method: str) -> Path:
    """The cached heat map PNG, computing it (and its faithfulness figure) the first time."""
    from ml.cam import (
        heatmap_png,  # pytorch-grad-cam is slow to import; most requests never need it
    )

    if method not in METHODS:
        raise CamUnavailable(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    target = cam_path(slice_result, method)
    if target.exists():
        return target
    with using_predictor() as predictor:
        if predictor.bundle.id != prediction.bundle_id:
            raise CamUnavailable(
                f"this result was made by bundle {prediction.bundle_name} "
                f"({prediction.bundle_id}), which is not the loaded model; its heat map cannot "
                "be drawn by another model"
            )
        if target.exists():  # made by a concurrent request while this one waited for the lock
            return target
        explanation = predictor.explain(
            storage.path_of(slice_result.stored_name),
            method=method,
            name=slice_result.original_name,
            neighbours=_neighbours(prediction, slice_result),
        )
        figures = {**(slice_result.faithfulness or {}), method: explanation.faithfulness}
        slice_result.faithfulness = figures
        db.session.commit()
        # The file marks the work as done, so it is written last: a request that finds it also
        # finds the faithfulness figure in the database.
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(heatmap_png(explanation.heatmap))
        partial.replace(target)  # atomic: another worker process never reads half a file
    return target


def _neighbours(prediction: Prediction, slice_result: SliceResult) -> tuple[Path, Path] | None:
    """The stored files of the slices before and after this one in its study (ends repeat it)."""
    ordered = sorted(prediction.slices, key=lambda s: s.position)
    if len(ordered) < 2:
        return None
    i = ordered.index(slice_result)
    before, after = ordered[max(i - 1, 0)], ordered[min(i + 1, len(ordered) - 1)]
    return storage.path_of(before.stored_name), storage.path_of(after.stored_name)
