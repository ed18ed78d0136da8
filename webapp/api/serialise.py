"""Rows as the JSON the API answers with: plain values, datetimes in ISO 8601 (UTC)."""

from __future__ import annotations

from typing import Any

from flask import url_for

from ml import Bundle, OperatingPoint
from webapp.bundles import caveats, points
from webapp.bundles.store import active_bundle
from webapp.filters import iso
from webapp.models import BundleRecord, Job, OperatingPointRecord, Prediction, SliceResult

CAM_METHOD = "gradcam"  # the heat map the API offers by default and links from a slice


def prediction_summary(p: Prediction) -> dict[str, Any]:
    """A stored result without its slices: what a list shows."""
    return {
        "id": p.id,
        "public_id": p.public_id,
        "version": p.version,
        "url": url_for("api.prediction", prediction_id=p.id),
        "kind": p.kind,
        "name": p.name,
        "score": p.score,
        "label": p.label,
        "threshold": p.threshold,
        "operating_point": p.operating_point,
        "uncertain": p.uncertain,
        "uncertain_reasons": list(p.uncertain_reasons or []),
        "aggregation": p.aggregation,
        "order_by": p.order_by,
        "slice_count": len(p.slices),
        "review": p.review,
        "true_label": p.true_label,
        "note": p.note,
        "job_id": p.job_id,
        "provenance": {
            "bundle_id": p.bundle_id,
            "bundle_name": p.bundle_name,
            "preprocessing": p.preprocessing,
            "app_version": p.app_version,
            "created_at": iso(p.created_at),
            "content_sha256": p.content_sha256,
        },
        **caveats.prediction_caveats(p),
    }


def prediction_detail(p: Prediction) -> dict[str, Any]:
    """A stored result with every slice in slice order."""
    return {**prediction_summary(p), "slices": [slice_json(p, s) for s in p.slices]}


def slice_json(p: Prediction, s: SliceResult) -> dict[str, Any]:
    """One slice's numbers; `cam_url` once its Grad-CAM has been made (it is cached then)."""
    faithfulness = dict(s.faithfulness or {})
    figures: dict[str, Any] = {
        "position": s.position,
        "name": s.original_name,
        "file_format": s.file_format,
        "content_sha256": s.content_sha256,
        "probability": s.probability,
        "fold_probabilities": list(s.fold_probabilities),
        "fold_std": s.fold_std,
        "view_std": s.view_std,
        "label": s.label,
        "uncertain": s.uncertain,
        "uncertain_reasons": list(s.uncertain_reasons or []),
        "faithfulness": faithfulness or None,
        "looks_like_head_ct": s.input_warning is None,
        "input_warning": s.input_warning,
    }
    if CAM_METHOD in faithfulness:
        figures["cam_url"] = url_for(
            "api.prediction_cam", prediction_id=p.id, slice=s.position, method=CAM_METHOD
        )
    return figures


def bundle_record(record: BundleRecord, active_id: str | None) -> dict[str, Any]:
    """One entry of the model list."""
    return {
        "id": record.id,
        "url": url_for("api.models.detail", bundle_id=record.id),
        "name": record.name,
        "backbone": record.backbone,
        "registered_at": iso(record.registered_at),
        "active": record.id == active_id,
        "synthetic_only": record.synthetic_only,
    }


def point_record(record: OperatingPointRecord) -> dict[str, Any]:
    """An operating point saved or adopted by this deployment."""
    return {
        "name": record.name,
        "level": record.level,
        "source": "deployment",
        "policy": record.policy,
        "threshold": record.threshold,
        "half_width": record.half_width,
        "metrics": record.metrics,
        "active": record.active,
        "created_by": record.created_by,
        "created_at": iso(record.created_at),
        "activated_at": iso(record.activated_at),
    }


def level_points(bundle: Bundle, level: str) -> dict[str, Any]:
    """The bundle's own points at `level`, the deployment's, and the one that labels now."""
    own, own_active = points.bundle_points(bundle, level)
    active = points.active_point(bundle, level)
    return {
        "active": {
            "name": active.point.name,
            "threshold": active.point.threshold,
            "half_width": active.half_width,
            "source": active.source,
        },
        "bundle": [_bundle_point(p, p.name == own_active) for p in own],
        "saved": [point_record(r) for r in points.saved_points(bundle, level)],
    }


def _bundle_point(point: OperatingPoint, bundle_default: bool) -> dict[str, Any]:
    return {**point.to_dict(), "source": "bundle", "bundle_default": bundle_default}


def job(j: Job) -> dict[str, Any]:
    """A job's state; once done, the results it stored (their ids, URLs and warnings); and
    what the results of its model must be read with."""
    made = sorted(j.predictions, key=lambda p: p.id) if j.status == "done" else []
    if made:
        about = caveats.model_caveats(caveats.synthetic_only(made[0].bundle_id))
    else:  # not done yet: the bundle loaded now will make its results
        about = caveats.bundle_caveats(active_bundle()[0])
    return {
        "id": j.id,
        "url": url_for("api.job", job_id=j.id),
        "status": j.status,
        "mode": j.mode,
        "total": j.total,
        "done": j.done,
        "error": j.error,
        "created_at": iso(j.created_at),
        "updated_at": iso(j.updated_at),
        "predictions": [
            {
                "id": p.id,
                "url": url_for("api.prediction", prediction_id=p.id),
                "warnings": caveats.prediction_caveats(p)["warnings"],
            }
            for p in made
        ],
        **about,
    }
