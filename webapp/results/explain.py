"""Grad-CAM of a stored slice, made on demand by the bundle that made its prediction; cached.

A heat map is made once however many requests ask for it at the same time: the request that
makes it holds a lock file beside the cached PNG (`flock`, so it holds across the threads of one
worker and across gunicorn's worker processes, and is let go when a killed worker's file closes).
Another request waits for it, a bounded time, or is told that it is under way (`CamInProgress`).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from sqlalchemy import select, update

from webapp import storage
from webapp.bundles.store import active_bundle, explaining
from webapp.extensions import db
from webapp.models import Prediction, SliceResult

METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "eigencam": "EigenCAM"}
# How long a request waits for a heat map another request is making, by default. It stays well
# under gunicorn's worker timeout (gunicorn.conf.py), so a waiting worker is never killed for it.
WAIT_S = 60.0
POLL_S = 0.2  # how often a waiting request tries the lock


class CamUnavailable(RuntimeError):
    """The heat map cannot be made here; the message says why."""


class CamInProgress(CamUnavailable):
    """Another request (in this worker or another one) is making this heat map now."""


class ResultGone(LookupError):
    """The result was deleted while its heat map was being made; nothing was stored."""


def cam_path(slice_result: SliceResult, method: str) -> Path:
    return storage.cache_path(slice_result.stored_name, f"cam-{method}.png")


def cam_ready(slice_result: SliceResult, method: str) -> bool:
    """True when the heat map is cached (its faithfulness figure is stored before the file)."""
    return method in METHODS and cam_path(slice_result, method).exists()


def ensure_cam(
    prediction: Prediction, slice_result: SliceResult, method: str, *, wait: float | None = None
) -> Path:
    """The cached heat map PNG, computing it (and its faithfulness figure) the first time.

    While another request makes the same map, this one waits up to `wait` seconds (WAIT_S by
    default) for it, then raises CamInProgress. The database transaction is ended before the
    computation, which can take many seconds on a busy CPU: nothing is held open meanwhile, and
    a result deleted meanwhile ends in ResultGone, with nothing stored.
    """
    from ml import heatmap_png

    if method not in METHODS:
        raise CamUnavailable(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    target = cam_path(slice_result, method)
    if target.exists():
        return target
    wanted = _Wanted.of(prediction, slice_result)
    db.session.commit()  # ends the read transaction (SQLite snapshot, PostgreSQL idle-in-tx)
    _check_bundle(wanted)
    with _making(target, wanted, WAIT_S if wait is None else wait):
        if target.exists():  # made by another request while this one waited for the lock
            return target
        began = time.monotonic()
        with explaining() as predictor:
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
    current_app.logger.info(
        "heat map %s of result %d, slice %d, made in %.1f s",
        method, wanted.number, wanted.position, time.monotonic() - began,
    )  # fmt: skip
    return target


def _check_bundle(wanted: _Wanted) -> None:
    """Only the bundle that made a result may draw its heat map."""
    bundle, _ = active_bundle()
    if bundle is not None and bundle.id != wanted.bundle_id:
        raise CamUnavailable(
            f"this result was made by bundle {wanted.bundle_name} "
            f"({wanted.bundle_id}), which is not the loaded model; its heat map cannot "
            "be drawn by another model"
        )


@contextmanager
def _making(target: Path, wanted: _Wanted, wait: float) -> Iterator[None]:
    """Held by the one request, of any thread or worker process, that makes `target`.

    The lock file is removed when the holder is done. A request that locked the file just
    before its removal sees that the path now names another file (or none) and starts again,
    so two requests never both think they hold the lock.
    """
    lock_path = target.with_name(target.name + ".lock")
    deadline = time.monotonic() + wait
    while True:
        try:
            handle = lock_path.open("a")
        except FileNotFoundError:  # the slice's folder went with the result
            raise ResultGone(_gone_message(wanted)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if time.monotonic() >= deadline:
                message = "another request is making this heat map now; ask again in a few seconds"
                raise CamInProgress(message) from None
            time.sleep(POLL_S)
            continue
        if _still_named(lock_path, handle.fileno()):
            break
        handle.close()
    try:
        yield
    finally:
        if _still_named(lock_path, handle.fileno()):  # not removed with its result meanwhile
            lock_path.unlink()
        handle.close()  # closing lets go of the lock


def _still_named(path: Path, descriptor: int) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


@dataclass(frozen=True)
class _Wanted:
    """What a heat map needs of its result, read before the transaction ends."""

    number: int
    slice_id: int
    position: int
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
            position=slice_result.position,
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
        raise ResultGone(_gone_message(wanted))
    db.session.commit()


def _gone_message(wanted: _Wanted) -> str:
    number = wanted.number
    return f"Result {number} was deleted while its heat map was being made; nothing was stored"


def _neighbours(prediction: Prediction, slice_result: SliceResult) -> tuple[Path, Path] | None:
    """The stored files of the slices before and after this one in its study (ends repeat it)."""
    ordered = sorted(prediction.slices, key=lambda s: s.position)
    if len(ordered) < 2:
        return None
    i = ordered.index(slice_result)
    before, after = ordered[max(i - 1, 0)], ordered[min(i + 1, len(ordered) - 1)]
    return storage.path_of(before.stored_name), storage.path_of(after.stored_name)
