"""What the studio page draws: OOF arrays, the report's figures with bootstrap bands, points,
stored results.

The curves' bands cost a few hundred bootstrap fits, so they are computed once per bundle and
level and cached as JSON under the instance folder, where every worker process finds them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select

from ml import THRESHOLD_TAG, Bundle, oof_curves, oof_figures
from webapp.bundles import points
from webapp.extensions import db
from webapp.models import Prediction

BOOTSTRAP_RESAMPLES = 200


def cached_curves(bundle: Bundle, level: str, source: str | None = None) -> dict[str, Any]:
    """ROC and PR curves with 95% bands (patients resampled) for this bundle, level and source
    (None: every source)."""
    root = current_app.config["CACHE_DIR"] or Path(current_app.instance_path) / "cache"
    folder = Path(root) / "studio"
    folder.mkdir(parents=True, exist_ok=True)
    of = "" if source is None else "-" + hashlib.sha256(source.encode()).hexdigest()[:12]
    path = folder / f"{bundle.id}-{level}{of}-{BOOTSTRAP_RESAMPLES}.json"
    if path.exists():
        return json.loads(path.read_text())
    scores = points.oof_scores(bundle, level, source)
    curves = oof_curves(scores, n_resamples=BOOTSTRAP_RESAMPLES, seed=0)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(curves))
    partial.replace(path)
    return curves


def studio_data(
    bundle: Bundle, level: str, threshold: float, source: str | None = None
) -> dict[str, Any]:
    """Everything the page needs to redraw itself for any threshold without asking again; the
    figures are drawn at `threshold` and the page moves what `moving` tags. `source`: the OOF
    slices of one data source only."""
    scores = points.oof_scores(bundle, level, source)
    own, own_active = points.bundle_points(bundle, level)
    curves = cached_curves(bundle, level, source)
    active = points.active_point(bundle, level)
    stored = db.session.execute(
        select(Prediction.score, Prediction.label).where(
            Prediction.bundle_id == bundle.id, Prediction.kind == points.KINDS[level]
        )
    ).all()
    return {
        "bundle": {"id": bundle.id, "name": bundle.name},
        "level": level,
        "source": source,
        "aggregation": scores.aggregation,
        "labels": scores.labels.astype(int).tolist(),
        "scores": [float(s) for s in scores.scores],
        "figures": oof_figures(
            scores, curves, threshold=threshold, points={p.name: p.threshold for p in own}
        ),
        "moving": THRESHOLD_TAG,
        "points": [
            {"name": p.name, "policy": p.policy, "threshold": p.threshold, "source": "bundle"}
            for p in own
        ]
        + [
            {"name": r.name, "policy": r.policy, "threshold": r.threshold, "source": "saved"}
            for r in points.saved_points(bundle, level)
            if r.policy == "saved"
        ],
        "bundle_active": own_active,
        "active": {"name": active.point.name, "threshold": active.point.threshold},
        "stored_results": {
            "scores": [float(s) for s, _ in stored],
            "stroke": [label == "Stroke" for _, label in stored],
        },
    }


def holdout_report(bundle: Bundle, level: str) -> dict[str, Any] | None:
    """The bundle's holdout figures at this level, shown beside the OOF view, never used here."""
    path = bundle.path / "report_holdout" / "metrics.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    return report.get(level)
