"""Operating points of this deployment: which threshold labels new results, per bundle and level.

A bundle carries its own points (chosen on OOF data when it was trained) and names one active.
The deployment may adopt another of them or save its own threshold; those choices live in the
database (`OperatingPointRecord`), since the bundle's files are hashed and never change. Results
already stored keep the threshold they were made with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select

import ml
from ml import Bundle, OofScores, OperatingPoint, band_half_width, metrics_at, read_thresholds
from webapp import audit
from webapp.bundles.store import active_bundle, register
from webapp.extensions import db
from webapp.models import OperatingPointRecord, Prediction, now

FILES = {"slice": "thresholds.json", "patient": "patient_thresholds.json"}
KINDS = {"slice": "slice", "patient": "study"}  # the Prediction.kind each level labels


class PointError(ValueError):
    """A request about operating points that cannot be honoured; the message says why."""

    status = 400  # the HTTP status that answers it


class UnknownPoint(PointError):
    """No point at that level has that name."""

    status = 404


class PointInUse(PointError):
    """The point labels new results now; another must be made active before it can go."""

    status = 409


@dataclass(frozen=True)
class ActivePoint:
    point: OperatingPoint
    half_width: float  # of the 'uncertain' band, measured on OOF data at this threshold
    source: str  # "bundle" (its own active point) or "deployment" (saved here)


def bundle_points(bundle: Bundle, level: str) -> tuple[list[OperatingPoint], str]:
    """The bundle's stored points at `level` and the name of its own active one."""
    if level not in FILES:
        raise PointError(f"unknown level {level!r}; choose slice or patient")
    return read_thresholds(bundle.path / FILES[level])


@lru_cache(maxsize=32)
def _oof(bundle_path: str, bundle_id: str, level: str, source: str | None) -> OofScores:
    return ml.oof_scores(ml.load_bundle(bundle_path), level, source)


def oof_scores(bundle: Bundle, level: str, source: str | None = None) -> OofScores:
    """OOF scores, read once per process and bundle (the id is part of the cache key);
    `source`: one data source's only."""
    if level not in FILES:
        raise PointError(f"unknown level {level!r}; choose slice or patient")
    return _oof(str(bundle.path), bundle.id, level, source)


def active_point(bundle: Bundle, level: str) -> ActivePoint:
    """The point that labels new results at `level` now."""
    record = db.session.scalar(
        select(OperatingPointRecord).where(
            OperatingPointRecord.bundle_id == bundle.id,
            OperatingPointRecord.level == level,
            OperatingPointRecord.active.is_(True),
        )
    )
    if record is not None:
        return ActivePoint(_as_point(record), record.half_width, "deployment")
    points, active_name = bundle_points(bundle, level)
    point = next(p for p in points if p.name == active_name)
    return ActivePoint(point, _bundle_half_width(bundle, level, point), "bundle")


def named_point(bundle: Bundle, level: str, name: str) -> ActivePoint:
    """A point by name: one saved by this deployment, else one of the bundle's own."""
    record = _record(bundle, level, name)
    if record is not None:
        return ActivePoint(_as_point(record), record.half_width, "deployment")
    stored, _ = bundle_points(bundle, level)
    point = next((p for p in stored if p.name == name), None)
    if point is None:
        raise PointError(unknown_point(bundle, level, name))
    return ActivePoint(point, band(bundle, level, point.threshold), "bundle")


def point_names(bundle: Bundle, level: str) -> list[str]:
    """Every point's name at `level`, once each: the bundle's own, then the deployment's.

    A bundle point made active here is also a deployment record under the same name.
    """
    own, _ = bundle_points(bundle, level)
    names = [p.name for p in own]
    return names + [r.name for r in saved_points(bundle, level) if r.name not in names]


def unknown_point(bundle: Bundle, level: str, name: str) -> str:
    """What to say about a name that is no point at `level`."""
    known = ", ".join(point_names(bundle, level))
    return f"no {level} operating point called {name!r}; there are {known}"


def _bundle_half_width(bundle: Bundle, level: str, point: OperatingPoint) -> float:
    """The band of the bundle's own active point: stored for slices, measured for patients."""
    if level == "slice":
        import json

        return float(json.loads((bundle.path / "uncertainty.json").read_text())["half_width"])
    return band(bundle, level, point.threshold)


def band(bundle: Bundle, level: str, threshold: float) -> float:
    """Half-width of the 'uncertain' band around `threshold`, measured on OOF data."""
    return band_half_width(oof_scores(bundle, level), threshold, _share(bundle))


def saved_points(bundle: Bundle, level: str) -> list[OperatingPointRecord]:
    return list(
        db.session.scalars(
            select(OperatingPointRecord)
            .where(OperatingPointRecord.bundle_id == bundle.id, OperatingPointRecord.level == level)
            .order_by(OperatingPointRecord.created_at)
        )
    )


def save_point(
    bundle: Bundle, level: str, name: str, threshold: float, *, created_by: str, activate: bool
) -> OperatingPointRecord:
    """Record a threshold under a name (with its OOF metrics and band); optionally activate it."""
    name = (name or "").replace("\x00", "").strip()  # PostgreSQL refuses NUL in text
    if not name or len(name) > 100:
        raise PointError("give the operating point a name of 1 to 100 characters")
    if not 0.0 <= threshold <= 1.0:
        raise PointError(f"threshold must lie in [0, 1], got {threshold}")
    stored, _ = bundle_points(bundle, level)
    if any(p.name == name for p in stored):
        raise PointError(f"{name!r} is one of the bundle's own points; choose another name")
    register(bundle)
    existing = _record(bundle, level, name)
    if existing is not None:
        raise PointError(f"an operating point called {name!r} exists already at {level} level")
    record = _new_record(bundle, level, name, "saved", threshold, created_by)
    db.session.add(record)
    audit.record(
        "operating_point", f"bundle {bundle.id} {level}", saved=name, threshold=float(threshold)
    )
    if activate:
        _activate(record)
    db.session.commit()
    return record


def adopt_bundle_point(bundle: Bundle, level: str, name: str, *, created_by: str) -> None:
    """Make one of the bundle's own points active (recorded like a saved one, with who/when)."""
    stored, _ = bundle_points(bundle, level)
    point = next((p for p in stored if p.name == name), None)
    if point is None:
        raise PointError(f"the bundle has no {level} operating point called {name!r}")
    register(bundle)
    record = _record(bundle, level, name)
    if record is None:
        record = _new_record(bundle, level, name, point.policy, point.threshold, created_by)
        db.session.add(record)
    _activate(record)
    db.session.commit()


def activate_saved(record: OperatingPointRecord) -> None:
    _activate(record)
    db.session.commit()


def delete_saved(bundle: Bundle, level: str, name: str) -> OperatingPointRecord:
    """Delete a point this deployment saved (audited); results made with it keep its name.

    The bundle's own points are part of the bundle and stay. The active point cannot go, or
    nothing would say which threshold labels new results: activate another first.
    """
    own, _ = bundle_points(bundle, level)
    record = _record(bundle, level, name)
    if any(p.name == name for p in own):
        raise PointError(
            f"{name!r} is one of the bundle's own points, stored in the bundle itself; only "
            "points saved in this deployment can be deleted"
        )
    if record is None:
        raise UnknownPoint(unknown_point(bundle, level, name))
    if record.active:
        raise PointInUse(
            f"{name!r} is the active {level} operating point: make another active first, "
            "then delete it"
        )
    audit.record(
        "operating_point",
        f"bundle {bundle.id} {level}",
        deleted=record.name,
        threshold=record.threshold,
    )
    db.session.delete(record)
    db.session.commit()
    return record


def _activate(record: OperatingPointRecord) -> None:
    audit.record(
        "operating_point",
        f"bundle {record.bundle_id} {record.level}",
        activated=record.name,
        threshold=record.threshold,
    )
    for other in db.session.scalars(
        select(OperatingPointRecord).where(
            OperatingPointRecord.bundle_id == record.bundle_id,
            OperatingPointRecord.level == record.level,
            OperatingPointRecord.active.is_(True),
        )
    ):
        other.active = False
    db.session.flush()
    record.active = True
    record.activated_at = now()


def _record(bundle: Bundle, level: str, name: str) -> OperatingPointRecord | None:
    """The deployment's record of the point called `name` at `level`, if there is one."""
    if "\x00" in name:  # no stored name holds NUL, and PostgreSQL refuses to compare with one
        return None
    return db.session.scalar(
        select(OperatingPointRecord).where(
            OperatingPointRecord.bundle_id == bundle.id,
            OperatingPointRecord.level == level,
            OperatingPointRecord.name == name,
        )
    )


def _new_record(
    bundle: Bundle, level: str, name: str, policy: str, threshold: float, created_by: str
) -> OperatingPointRecord:
    """A record with the OOF metrics and the uncertain band at `threshold` (inactive)."""
    return OperatingPointRecord(
        bundle_id=bundle.id,
        level=level,
        name=name,
        policy=policy,
        threshold=float(threshold),
        half_width=band(bundle, level, threshold),
        metrics=metrics_at(oof_scores(bundle, level), threshold),
        created_by=(created_by or "unknown").replace("\x00", "")[:100],
        active=False,
    )


def _share(bundle: Bundle) -> float:
    return float(bundle.train_config().uncertainty_share)


def _as_point(record: OperatingPointRecord) -> OperatingPoint:
    return OperatingPoint(
        name=record.name,
        policy=record.policy,
        threshold=record.threshold,
        metrics=dict(record.metrics),
    )


def would_change(bundle: Bundle, level: str, threshold: float):
    """Stored results of this bundle at this level whose label differs at `threshold`."""
    stroke_now = Prediction.score >= threshold
    return (
        select(Prediction)
        .where(Prediction.bundle_id == bundle.id, Prediction.kind == KINDS[level])
        .where(
            ((Prediction.label == "Stroke") & ~stroke_now)
            | ((Prediction.label == "Normal") & stroke_now)
        )
        .order_by(Prediction.created_at.desc())
    )


def active_threshold(kind: str) -> float | None:
    """The threshold that would label a slice or a study (patient) result made now."""
    bundle, _ = active_bundle()
    if bundle is None:
        return None
    return active_point(bundle, "patient" if kind == "study" else "slice").point.threshold
