"""Grad-CAM of a stored slice, made on demand by the bundle that made its prediction; cached."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from webapp import storage
from webapp.bundles.store import using_predictor
from webapp.extensions import db
from webapp.models import Prediction, SliceResult

METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "eigencam": "EigenCAM"}


class CamUnavailable(RuntimeError):
    """The heat map cannot be made here; the message says why."""


class ResultGone(LookupError):
    """The result was deleted while its heat map was being made; nothing was stored."""


def cam_path(slice_result: SliceResult, method: str) -> Path:
    return storage.cache_path(slice_result.stored_name, f"cam-{method}.png")


def ensure_cam(prediction: Prediction, slice_result: SliceResult, method: str) -> Path:
    """The cached heat map PNG, computing it (and its faithfulness figure) the first time.

    The database transaction is ended before the computation, which can take many seconds on a
    busy CPU: nothing is held open meanwhile, and a result deleted meanwhile ends in
    ResultGone, with nothing stored.
    """
    from ml import heatmap_png

    if method not in METHODS:
        raise CamUnavailable(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    target = cam_path(slice_result, method)
    if target.exists():
        return target
    wanted = _Wanted.of(prediction, slice_result)
    db.session.commit()  # ends the read transaction (SQLite snapshot, PostgreSQL idle-in-tx)
    with using_predictor() as predictor:
        if predictor.bundle.id != wanted.bundle_id:
            raise CamUnavailable(
                f"this result was made by bundle {wanted.bundle_name} "
                f"({wanted.bundle_id}), which is not the loaded model; its heat map cannot "
                "be drawn by another model"
            )
        if target.exists():  # made by a concurrent request while this one waited for the lock
            return target
        explanation = predictor.explain(
            storage.path_of(wanted.stored_name),
            method=method,
            name=wanted.original_name,
            neighbours=wanted.neighbours,
        )
        _store_faithfulness(wanted, method, explanation.faithfulness)
        # The file marks the work as done, so it is written last: a request that finds it also
        # finds the faithfulness figure in the database.
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(heatmap_png(explanation.heatmap))
        partial.replace(target)  # atomic: another worker process never reads half a file
    return target


@dataclass(frozen=True)
class _Wanted:
    """What a heat map needs of its result, read before the transaction ends."""

    number: int
    slice_id: int
    stored_name: str
    original_name: str
    bundle_id: str
    bundle_name: str
    neighbours: tuple[Path, Path] | None

    @classmethod
    def of(cls, prediction: Prediction, slice_result: SliceResult) -> _Wanted:
        return cls(
            number=prediction.id,
            slice_id=slice_result.id,
            stored_name=slice_result.stored_name,
            original_name=slice_result.original_name,
            bundle_id=prediction.bundle_id,
            bundle_name=prediction.bundle_name,
            neighbours=_neighbours(prediction, slice_result),
        )


def _store_faithfulness(wanted: _Wanted, method: str, figure: dict[str, float]) -> None:
    """Add the method's figure to the slice row, unless the result was deleted meanwhile.

    The row is matched by its stored file name too (random, never reused), so the figure can
    never land on another result's slice that took a freed row number.
    """
    row = (SliceResult.id == wanted.slice_id) & (SliceResult.stored_name == wanted.stored_name)
    current = db.session.execute(select(SliceResult.faithfulness).where(row)).first()
    stored = None
    if current is not None:
        figures = {**(current[0] or {}), method: figure}
        stored = db.session.execute(
            update(SliceResult)
            .where(row)
            .values(faithfulness=figures)
            .execution_options(synchronize_session=False)
        )
    if stored is None or stored.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        raise ResultGone(
            f"Result {wanted.number} was deleted while its heat map was being made; "
            "nothing was stored"
        )
    db.session.commit()


def _neighbours(prediction: Prediction, slice_result: SliceResult) -> tuple[Path, Path] | None:
    """The stored files of the slices before and after this one in its study (ends repeat it)."""
    ordered = sorted(prediction.slices, key=lambda s: s.position)
    if len(ordered) < 2:
        return None
    i = ordered.index(slice_result)
    before, after = ordered[max(i - 1, 0)], ordered[min(i + 1, len(ordered) - 1)]
    return storage.path_of(before.stored_name), storage.path_of(after.stored_name)
