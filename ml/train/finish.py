"""From trained folds to a complete bundle: predictions, operating points, calibration,
uncertainty, reports, model card and manifest. Everything is chosen on out-of-fold predictions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml.bundle import write_manifest
from ml.config import TrainConfig
from ml.data import splits
from ml.evaluate import model_card, report
from ml.evaluate.scored import Scored
from ml.evaluate.scoring import write_report
from ml.metrics import calibration, thresholds
from ml.metrics import scores as metrics
from ml.metrics.thresholds import find_point
from ml.runtime import pick_device

# `label` is what the slice was trained and is scored on (its slice label where known, else its
# study's); `study_label` the patient's, `folder_label` what its folder said, `slice_known`
# whether `label` is a real slice label.
PREDICTION_COLUMNS = (
    "path", "patient_id", "fold", "label", "probability", "sha256",
    "source", "study_label", "folder_label", "slice_known",
)  # fmt: skip
SPREAD_SAMPLE = 256  # OOF slices scored by every fold model to size the disagreement flag


def write_bundle(
    out: Path, cfg: TrainConfig, prepared: Any, results: list, notes: Sequence[str]
) -> str:
    """Write every derived file of a finished run and the manifest; return the bundle id."""
    records, parts = prepared.records, prepared.parts
    oof = np.full(len(records), np.nan)
    for result in results:
        oof[parts == result.fold] = result.val_probabilities
    cv_rows = np.flatnonzero(parts > 0)
    holdout_rows = np.flatnonzero(parts == splits.HOLDOUT)
    holdout = (
        np.mean([r.holdout_probabilities for r in results], axis=0) if len(holdout_rows) else None
    )
    hashes = prepared.file_hashes
    _write_predictions(out / "oof.csv", records, hashes, parts, cv_rows, oof[cv_rows])
    if holdout is not None:
        _write_predictions(out / "holdout.csv", records, hashes, parts, holdout_rows, holdout)

    scored = report.scored_rows(records, parts, cv_rows, oof[cv_rows], folds=True)
    cfg, aggregation_choice = choose_aggregation(cfg, scored)
    slice_points, patient_points, active = _operating_points(cfg, scored)
    thresholds.write_thresholds(out / "thresholds.json", slice_points, active[0], level="slice")
    thresholds.write_thresholds(
        out / "patient_thresholds.json",
        patient_points,
        active[1],
        level="patient",
        extra={"aggregation": cfg.study_aggregation},
    )
    calibrator = calibration.fit(scored.labels, scored.probabilities, cfg.calibration)
    models = _fold_models(out, cfg, results)
    uncertainty = _uncertainty(models, cfg, prepared, results, scored, slice_points, active[0])
    _write_json(out / "uncertainty.json", uncertainty)
    summary = report.summarise(
        cfg,
        prepared,
        results,
        oof,
        holdout,
        {
            "slice": active[0],
            "patient": active[1],
            "slice_threshold": find_point(slice_points, active[0]).threshold,
            "patient_threshold": find_point(patient_points, active[1]).threshold,
            "chosen_on": thresholds.CHOSEN_ON,
        },
    )
    summary["aggregation_choice"] = aggregation_choice
    summary["labels"] = prepared.labels_used
    summary["cam_in_lesion"] = _lesion_cam(models, cfg, prepared, results)
    _write_json(out / "metrics.json", summary)
    report_options = {
        "slice_points": slice_points,
        "patient_points": patient_points,
        "active": active,
        "aggregation": cfg.study_aggregation,
        "calibrator": calibrator,
        "seed": cfg.seed,
    }
    oof_report = write_report(
        out / "report",
        scored,
        title="Out-of-fold predictions of the training run",
        evaluated_on=f"out-of-fold predictions, patient-grouped {len(results)}-fold CV",
        **report_options,
    )
    if holdout is not None:
        write_report(
            out / "report_holdout",
            report.scored_rows(records, parts, holdout_rows, holdout, folds=False),
            title="Held-out patients",
            evaluated_on="holdout patients, never used for training, selection or thresholds",
            **report_options,
        )
    _write_json(
        out / "calibration.json",
        {"calibrator": calibrator.to_dict(), "oof": oof_report["calibration"]},
    )
    groups = [r.patient_id for r in records]
    split = {"seed": cfg.seed, "folds": int(parts.max()), **splits.patients_by_part(groups, parts)}
    _write_json(out / "split.json", split)
    (out / "report.md").write_text(report.render(cfg, prepared, results, summary))
    data = _data_summary(prepared)
    all_notes = [*notes, *report.caveats(prepared, cfg)]
    (out / "model_card.md").write_text(
        model_card.render(
            name=out.name,
            cfg=cfg,
            data=data,
            weights_source=results[0].weights_source,
            summary=summary,
            slice_points=slice_points,
            patient_points=patient_points,
            active=active,
            calibration=oof_report["calibration"],
            uncertainty=uncertainty,
            audit=prepared.audit,
            notes=all_notes,
            point_figures={
                level: oof_report[level]["operating_points"] for level in ("slice", "patient")
            },
        )
    )
    return write_manifest(
        out,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        weights_source=results[0].weights_source,
        normalisation={"mean": results[0].mean, "std": results[0].std},
        data=data,
        notes=all_notes,
    )


def choose_aggregation(cfg: TrainConfig, scored: Scored) -> tuple[TrainConfig, dict | None]:
    """With `study_aggregation: auto`, the rule whose out-of-fold patient ROC-AUC is highest
    (ties: the first of AGGREGATIONS). It is chosen on the same predictions its figures are then
    reported on, a small optimism with four candidates; the card says so."""
    if cfg.study_aggregation != "auto":
        return cfg, None
    candidates = {}
    for method in metrics.AGGREGATIONS:
        _, y, p = scored.patient_level(method)
        candidates[method] = metrics.roc_auc(y, p) if len(set(y.tolist())) == 2 else None
    scored_ones = {m: v for m, v in candidates.items() if v is not None}
    chosen = max(scored_ones, key=scored_ones.get) if scored_ones else "mean"
    choice = {
        "chosen": chosen,
        "chosen_on": "out-of-fold patient ROC-AUC (the figures below are on the same patients)",
        "candidates": candidates,
    }
    return replace(cfg, study_aggregation=chosen), choice


def _operating_points(cfg: TrainConfig, scored: Scored):
    """All standard points at slice and at patient level, written to the bundle."""
    options = {
        "sensitivity_target": cfg.sensitivity_target,
        "specificity_target": cfg.specificity_target,
        "cost_ratio": cfg.cost_ratio,
    }
    slice_points = thresholds.standard_points(scored.labels, scored.probabilities, **options)
    _, patient_y, patient_p = scored.patient_level(cfg.study_aggregation)
    if len(set(patient_y.tolist())) == 2:
        patient_points = thresholds.standard_points(patient_y, patient_p, **options)
    else:  # e.g. trained on a site whose every patient is positive: nothing to choose on
        patient_points = slice_points
    active = (_active_name(slice_points, cfg), _active_name(patient_points, cfg))
    return slice_points, patient_points, active


def _active_name(points: list[thresholds.OperatingPoint], cfg: TrainConfig) -> str:
    return next(p.name for p in points if p.policy == cfg.threshold_policy)


def _uncertainty(models, cfg, prepared, results, scored, slice_points, active: str) -> dict:
    """The 'uncertain' flag's two limits, both set from OOF data."""
    threshold = find_point(slice_points, active).threshold
    band = thresholds.uncertainty_band(
        scored.labels, scored.probabilities, threshold, share=cfg.uncertainty_share
    )
    spreads = _fold_spreads(list(models.values()), cfg, prepared, results)
    return {
        **band,
        "fold_std_limit": float(np.quantile(spreads, cfg.fold_spread_quantile)),
        "fold_std_quantile": cfg.fold_spread_quantile,
        "fold_std_note": (
            f"the {cfg.fold_spread_quantile:.0%} quantile over {len(spreads)} out-of-fold slices "
            "scored by every fold model; most of those models trained on these slices, so new "
            "slices are flagged more often than this quantile suggests"
        ),
    }


def _fold_models(out: Path, cfg: TrainConfig, results: list) -> dict[int, Any]:
    """Each fold's saved model, loaded once (on the CPU, in eval mode), by fold."""
    from ml.models.loading import load_fold_models

    weights = [out / f"fold_{r.fold}.safetensors" for r in results]
    return dict(zip([r.fold for r in results], load_fold_models(weights, cfg), strict=True))


def _fold_spreads(models: list, cfg: TrainConfig, prepared: Any, results: list) -> np.ndarray:
    """Standard deviation across the fold models for a sample of OOF slices."""
    from ml.data.transforms import SliceDataset
    from ml.train import loop as train

    rows = np.flatnonzero(prepared.parts > 0)
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(rows, size=min(SPREAD_SAMPLE, len(rows)), replace=False))
    dataset = SliceDataset(
        prepared.images,
        prepared.labels,
        sample.tolist(),
        in_chans=cfg.in_chans,
        mean=results[0].mean,
        std=results[0].std,
    )
    loader = train.make_loader(dataset, batch_size=cfg.batch_size, num_workers=0, seed=cfg.seed)
    device = pick_device(cfg.device)
    per_fold = [
        train.evaluate(model.to(device), loader, device=device, views=cfg.tta_views, amp=False)
        for model in models
    ]
    for model in models:
        model.cpu()  # where the lesion check expects them
    return np.std(np.stack(per_fold), axis=0)


def _lesion_cam(models: dict, cfg: TrainConfig, prepared: Any, results: list) -> dict | None:
    """Grad-CAM against the lesion masks, out of fold (ml.explain.lesion)."""
    from ml.explain.lesion import cam_in_lesion

    if not any(r.mask is not None for r in prepared.records) or cfg.lesion_cam_slices <= 0:
        return None
    return cam_in_lesion(
        models,
        prepared.images,
        prepared.records,
        prepared.parts,
        prepared.decoded.frames,
        in_chans=cfg.in_chans,
        mean=results[0].mean,
        std=results[0].std,
        limit=cfg.lesion_cam_slices,
        layer=cfg.cam_layer,
        seed=cfg.seed,
    )


def _data_summary(prepared: Any) -> dict[str, Any]:
    data = prepared.dataset.summary()
    data.update(
        {
            "source_name": " + ".join(sorted({r.source for r in prepared.records})),
            "fingerprint": prepared.fingerprint,
            "unreadable_files": len(prepared.decoded.bad),
        }
    )
    return data


def _write_predictions(path: Path, records, hashes, parts, rows, probabilities) -> None:
    """One row per slice; the file's sha256 lets `ml evaluate` spot slices seen in training."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for row, probability in zip(rows, probabilities, strict=True):
            r = records[row]
            fold = "holdout" if parts[row] == splits.HOLDOUT else int(parts[row])
            writer.writerow(
                [
                    r.rel_path,
                    r.patient_id,
                    fold,
                    r.label,
                    repr(float(probability)),
                    hashes[row],
                    r.source,
                    r.study,
                    r.folder,
                    int(r.slice_known),
                ]
            )


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
