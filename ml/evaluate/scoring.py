"""Evaluation reports: figures with intervals, predictions and plots, in one folder.

The same writer serves three sources, and each report says which it is:
- the out-of-fold predictions at the end of `ml train` (calibration cross-fitted over folds);
- a bundle's holdout;
- an independent labelled folder (`python -m ml evaluate --bundle B --data DIR`).
Operating points are always the bundle's, chosen on OOF predictions; a report never chooses one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.bundle import read_rows
from ml.evaluate import figures as plots
from ml.evaluate.report import by_source, level_figures
from ml.evaluate.scored import Scored, scored_from_rows, with_intervals
from ml.metrics import calibration
from ml.metrics import scores as metrics
from ml.metrics.thresholds import OperatingPoint, find_point, read_thresholds


def level_report(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: Sequence[str],
    points: Sequence[OperatingPoint],
    seed: int,
) -> dict[str, Any]:
    """ROC/PR with patient-resampled CIs, every operating point with Wilson CIs, ECE and Brier."""
    figures = level_figures(labels, scores, groups, seed)
    figures["operating_points"] = {
        p.name: with_intervals(metrics.at_threshold(labels, scores, p.threshold)) for p in points
    }
    figures["calibration"] = {
        "ece": calibration.ece(labels, scores),
        "brier": calibration.brier(labels, scores),
    }
    return figures


def write_report(
    out: Path,
    scored: Scored,
    *,
    title: str,
    evaluated_on: str,
    slice_points: Sequence[OperatingPoint],
    patient_points: Sequence[OperatingPoint],
    active: tuple[str, str],
    aggregation: str,
    calibrator: calibration.Calibrator,
    seed: int = 0,
) -> dict[str, Any]:
    """metrics.json, predictions.csv and the figures (HTML and PNG) for one set of predictions."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    y, p = scored.labels, scored.probabilities
    patients, patient_y, patient_p = scored.patient_level(aggregation)
    result = {
        "title": title,
        "evaluated_on": evaluated_on,
        "operating_points_chosen_on": "out-of-fold predictions of the training run",
        "active": {"slice": active[0], "patient": active[1]},
        "slice": level_report(y, p, scored.patients, slice_points, seed),
        "patient": level_report(patient_y, patient_p, patients, patient_points, seed),
        "aggregation": aggregation,
        "by_source": by_source(scored, aggregation, seed),
        "calibration": _calibration(scored, calibrator),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    _write_predictions(out / "predictions.csv", scored, calibrator)
    slice_active = find_point(slice_points, active[0])
    patient_active = find_point(patient_points, active[1])
    figures = {
        "confusion_slice": plots.confusion_figure(
            result["slice"]["operating_points"][slice_active.name],
            title=f"Slices at {slice_active.name} (threshold {slice_active.threshold:.3f})",
        ),
        "confusion_patient": plots.confusion_figure(
            result["patient"]["operating_points"][patient_active.name],
            title=f"Patients at {patient_active.name} (threshold {patient_active.threshold:.3f})",
        ),
        "distribution_slice": plots.distribution_figure(
            y, p, threshold=slice_active.threshold, title="Probability by true class, slices"
        ),
        "reliability_slice": plots.reliability_figure(
            result["calibration"]["before"]["reliability"],
            result["calibration"]["after"]["reliability"],
            title=f"Reliability, slices ({calibrator.method} calibration)",
        ),
    }
    # Curves need both classes: a site whose every patient is positive has no patient ROC.
    if len(set(y.tolist())) == 2:
        figures["roc_slice"] = plots.roc_figure(
            y, p, points=_thresholds(slice_points), title="ROC, slices"
        )
        figures["pr_slice"] = plots.pr_figure(
            y, p, points=_thresholds(slice_points), title="PR, slices"
        )
        figures["thresholds_slice"] = plots.threshold_figure(y, p, points=_thresholds(slice_points))
    if len(set(patient_y.tolist())) == 2:
        figures["roc_patient"] = plots.roc_figure(
            patient_y, patient_p, points=_thresholds(patient_points), title="ROC, patients"
        )
    plots.write_figures(out, figures)
    return result


def _calibration(scored: Scored, calibrator: calibration.Calibrator) -> dict[str, Any]:
    """Before/after figures on data the calibrator did not see.

    OOF predictions: a calibrator per fold, fitted on the other folds (cross-fitted). Other data
    (holdout, independent folder): the bundle's calibrator, fitted on OOF, applied as it is.
    """
    y, p = scored.labels, scored.probabilities
    if scored.folds is not None:
        return calibration.calibration_report(y, p, scored.folds, calibrator.method)
    after = calibrator.apply(p)
    return {
        "method": calibrator.method,
        "fitted_on": calibration.FITTED_ON,
        "evaluated_on": "these predictions, which the calibrator did not see",
        "before": _calibration_figures(y, p),
        "after": _calibration_figures(y, after),
        "calibrator": calibrator.to_dict(),
    }


def _calibration_figures(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {
        "ece": calibration.ece(y, p),
        "brier": calibration.brier(y, p),
        "reliability": calibration.reliability(y, p),
    }


def _write_predictions(path: Path, scored: Scored, calibrator: calibration.Calibrator) -> None:
    calibrated = calibrator.apply(scored.probabilities)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["path", "patient_id", "label", "probability", "calibrated_probability"]
        writer.writerow([*header, "fold"] if scored.folds is not None else header)
        for i, path_name in enumerate(scored.paths):
            row = [
                path_name,
                scored.patients[i],
                int(scored.labels[i]),
                repr(float(scored.probabilities[i])),
                repr(float(calibrated[i])),
            ]
            writer.writerow([*row, scored.folds[i]] if scored.folds is not None else row)


def _thresholds(points: Sequence[OperatingPoint]) -> dict[str, float]:
    return {p.name: p.threshold for p in points}


def evaluate_bundle(
    bundle_path: Path,
    *,
    data: Path | list | None,
    holdout: bool,
    out: Path,
    backend: str = "auto",
    precision: str = "f32",
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score labelled slices with the full ensemble and write a report; never tunes anything.

    `data` alone: an independent labelled folder or manifest, or several sources
    (ml.data.sources), each reported on its own too. `holdout` alone: the bundle's stored holdout
    predictions. Both: the holdout's files are scored again from `data`.
    """
    from ml.data.sources import as_sources
    from ml.infer.predictor import Predictor

    if data is None and not holdout:
        raise ValueError("give --data DIR, --holdout, or both")
    predictor = Predictor.from_bundle(
        bundle_path, backend=backend, precision=precision, device=device
    )
    bundle, cfg = predictor.bundle, predictor.cfg
    stored_holdout = read_rows(bundle.path / "holdout.csv") if holdout else None
    if holdout and stored_holdout is None:
        raise ValueError(f"{bundle.path} has no holdout.csv: it was trained without a holdout")
    notes: list[str] = []
    seen = 0
    if data is None:
        scored = scored_from_rows(stored_holdout)
        source = "the bundle's holdout (stored ensemble predictions)"
    else:
        sources = as_sources(data)
        scored, files, notes = _score_sources(predictor, sources, stored_holdout, batch_size)
        names = " + ".join(s.name for s in sources)
        source = f"{'holdout slices of ' if holdout else ''}{names}"
        seen = _seen_in_training(bundle.path, files)
    if seen:
        notes.append(
            f"{seen} of these slices were used in training (their files match oof.csv): "
            "figures on them are not independent"
        )
    points, active = read_thresholds(bundle.path / "thresholds.json")
    patient_points, patient_active = read_thresholds(bundle.path / "patient_thresholds.json")
    calibrator = calibration.Calibrator.from_dict(
        json.loads((bundle.path / "calibration.json").read_text())["calibrator"]
    )
    result = write_report(
        out,
        scored,
        title=f"Evaluation of bundle {bundle.name} ({bundle.id}) on {source}",
        evaluated_on=source,
        slice_points=points,
        patient_points=patient_points,
        active=(active, patient_active),
        aggregation=cfg.study_aggregation,
        calibrator=calibrator,
        seed=cfg.seed,
    )
    if predictor.backend_note:
        notes.append(f"inference: {predictor.backend_note}")
    result.update(
        {
            "bundle_id": bundle.id,
            "seen_in_training": seen,
            "notes": notes,
            "runtime": predictor.runtime,
        }
    )
    (Path(out) / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def _score_sources(predictor, sources: list, holdout_rows, batch_size: int):
    """Ensemble probabilities for labelled sources; unreadable files are skipped and noted.

    Returns the scored slices, the files they were read from, and the notes.
    """
    from ml.data.readers import UnreadableImage
    from ml.data.sources import load_sources

    cfg = predictor.cfg
    records = load_sources(sources, cfg.class_map, cfg.patient_regex)[0].records
    if holdout_rows is not None:
        wanted = {row["path"] for row in holdout_rows}
        records = [r for r in records if r.rel_path in wanted]
        if len(records) != len(wanted):
            missing = len(wanted) - len(records)
            raise ValueError(
                f"{missing} holdout slices are missing from the data given: pass the sources "
                "the bundle was trained on, with the same names"
            )
    kept, prepared, notes = [], [], []
    for record in records:
        try:
            prepared.append(predictor.prepare(record.path, record.rel_path))
            kept.append(record)
        except UnreadableImage as exc:
            notes.append(f"skipped {record.rel_path}: {exc}")
    prepared = _in_context(predictor, kept, prepared)
    probabilities = []
    for start in range(0, len(prepared), batch_size):
        batch = predictor.predict_prepared(prepared[start : start + batch_size])
        probabilities += [p.probability for p in batch]
    return Scored.of_records(kept, np.array(probabilities)), [r.path for r in kept], notes


def _in_context(predictor, records, prepared):
    """Under 2.5D, each patient's slices in slice order with their neighbours, as in training."""
    from ml.data.context import uses_neighbours
    from ml.data.dataset import slice_order

    if not uses_neighbours(predictor.cfg.input_mode):
        return prepared
    by_patient: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_patient.setdefault(record.patient_id, []).append(i)
    result = list(prepared)
    for rows in by_patient.values():
        rows.sort(key=lambda i: slice_order(records[i]))
        for i, stacked in zip(rows, predictor.in_context([prepared[i] for i in rows]), strict=True):
            result[i] = stacked
    return result


def _seen_in_training(bundle_path: Path, files: list[Path]) -> int:
    """How many of the scored files the bundle trained on (by content, wherever they lie)."""
    from ml.hashing import sha256_file

    trained = {row["sha256"] for row in read_rows(Path(bundle_path) / "oof.csv") or []}
    return sum(sha256_file(path) in trained for path in files)
