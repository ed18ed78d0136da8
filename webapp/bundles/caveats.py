"""What every result and every upload must say about itself, on pages and in the API.

- Not for clinical use: always.
- The model knows nothing about real CT: when the bundle (for a stored result: the bundle that
  made it) was trained on synthetic phantoms only, as the demo bundle is.
- The input does not look like an axial head CT: when ml's check said so of one of its slices.

Pages and the API read the same sentences from here, as `{"code", "message"}` warnings.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from ml import Bundle
from webapp.bundles.store import active_bundle
from webapp.extensions import db
from webapp.models import BundleRecord, Prediction

NOT_FOR_CLINICAL_USE = (
    "Research software, not for clinical use: this output is not a diagnosis and must not "
    "guide the care of any patient."
)
SYNTHETIC_MODEL = (
    "The model was trained on synthetic phantoms only: it knows nothing about real CT scans, "
    "so its label and score mean nothing for a real patient."
)


def synthetic_only(bundle_id: str) -> bool | None:
    """Whether the bundle with this id was trained on phantoms only; None when not recorded."""
    active, _ = active_bundle()
    if active is not None and active.id == bundle_id:
        return active.synthetic_only
    record = db.session.get(BundleRecord, bundle_id)
    return None if record is None else record.synthetic_only


def model_caveats(synthetic: bool | None) -> dict[str, Any]:
    """What a prediction made by a model of this kind must say, before looking at its input."""
    warnings = [{"code": "not_for_clinical_use", "message": NOT_FOR_CLINICAL_USE}]
    if synthetic:
        warnings.append({"code": "synthetic_model", "message": SYNTHETIC_MODEL})
    return {"not_for_clinical_use": True, "model_synthetic_only": synthetic, "warnings": warnings}


def bundle_caveats(bundle: Bundle | None) -> dict[str, Any]:
    """The caveats of predictions the bundle makes (the upload page, a job not yet done)."""
    return model_caveats(None if bundle is None else bundle.synthetic_only)


def prediction_caveats(p: Prediction) -> dict[str, Any]:
    """A stored result's caveats: its model's, and one per slice that is not a head CT."""
    caveats = model_caveats(synthetic_only(p.bundle_id))
    odd = [s for s in p.slices if s.input_warning]
    for s in odd:
        where = f"Slice {s.position + 1} ({s.original_name})" if p.kind == "study" else "The slice"
        caveats["warnings"].append(
            {"code": "not_head_ct", "message": f"{where}: {s.input_warning}"}
        )
    return {**caveats, "looks_like_head_ct": not odd}


def init_app(app: Flask) -> None:
    """Templates read the same caveats: `prediction_caveats(p)`, `bundle_caveats(bundle)`."""
    app.add_template_global(prediction_caveats)
    app.add_template_global(bundle_caveats)
