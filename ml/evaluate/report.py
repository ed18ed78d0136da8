"""Figures of a finished run (metrics.json) and the run report in plain words (report.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ml.config import TrainConfig
from ml.data import splits
from ml.data.sources import describe_labels
from ml.evaluate.numbers import interval, number
from ml.evaluate.position import position_figures
from ml.evaluate.scored import Scored, patient_rows
from ml.metrics import scores as metrics


def selection_note(cfg: TrainConfig) -> str:
    """How each fold's checkpoint was chosen, and what that does to the OOF figures."""
    if cfg.checkpoint == "last":
        return (
            "Each fold keeps its last epoch: nothing was chosen on the validation patients, so "
            "the choice of epoch does not flatter the out-of-fold figures."
        )
    return (
        "Each fold keeps the epoch with the best validation ROC-AUC on that same fold, and the "
        "out-of-fold predictions come from that checkpoint; choosing on the data that is then "
        "scored makes the OOF figures optimistic (checkpoint_check in metrics.json says by how "
        "much). A holdout, when drawn, is not."
    )


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    """A metric, or None where it is undefined (e.g. a part with one class only)."""
    try:
        return fn(*args)
    except ValueError:
        return None


def level_figures(
    labels: Sequence[int], scores: Sequence[float], groups: Sequence[str], seed: int
) -> dict[str, Any]:
    """ROC-AUC with a patient-resampled 95% CI, PR-AUC, counts."""
    labels = np.asarray(labels)
    ci = _safe(lambda: metrics.bootstrap_ci(labels, scores, groups, seed=seed))
    return {
        "n": len(labels),
        "positives": int(labels.sum()),
        "roc_auc": _safe(metrics.roc_auc, labels, scores),
        "roc_auc_ci95": list(ci) if ci else None,
        "pr_auc": _safe(metrics.pr_auc, labels, scores),
    }


def summarise(
    cfg: TrainConfig,
    prepared: Any,
    results: list,
    oof: np.ndarray,
    holdout: np.ndarray | None,
    active: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json: OOF slice and patient figures, fold spread, operating points, holdout."""
    parts = prepared.parts
    cv = parts > 0
    labels = prepared.labels
    groups = np.array([r.patient_id for r in prepared.records])
    sources = np.array([r.source for r in prepared.records])
    slice_fig = level_figures(labels[cv], oof[cv], groups[cv], cfg.seed)
    patients, p_labels, p_scores = _patients(
        groups[cv], labels[cv], oof[cv], sources[cv], cfg.study_aggregation
    )
    patient_fig = level_figures(p_labels, p_scores, patients, cfg.seed)
    patient_fig["aggregation"] = cfg.study_aggregation
    if len(set(sources.tolist())) > 1:
        kept = sources[cv][patient_rows(list(groups[cv]), labels[cv], list(sources[cv]))]
        patient_fig["sources"] = sorted(set(kept.tolist()))
    slice_threshold, patient_threshold = active["slice_threshold"], active["patient_threshold"]
    folds = [_fold_figures(r, labels, groups, sources, parts, oof, cfg) for r in results]
    summary = {
        "evaluation": f"out-of-fold predictions, patient-grouped {len(results)}-fold CV",
        "checkpoint_selection": selection_note(cfg),
        "checkpoint_check": checkpoint_check(cfg, prepared, results),
        "slice": slice_fig,
        "patient": patient_fig,
        "fold_spread": {
            key: _spread([f[key] for f in folds]) for key in ("slice_roc_auc", "patient_roc_auc")
        },
        "folds": folds,
        "operating_point": {"policy": cfg.threshold_policy, **active},
        "at_operating_point": _at(
            labels[cv], oof[cv], p_labels, p_scores, slice_threshold, patient_threshold
        ),
        "at_0.5": _at(labels[cv], oof[cv], p_labels, p_scores, 0.5, 0.5),
        "holdout": None,
        "by_source": by_source(
            scored_rows(prepared.records, parts, np.flatnonzero(cv), oof[cv], folds=True),
            cfg.study_aggregation,
            cfg.seed,
        ),
    }
    if holdout is not None:
        summary["holdout"] = _holdout_figures(
            prepared, holdout, cfg, slice_threshold, patient_threshold
        )
    return summary


def scored_rows(
    records: list,
    parts: np.ndarray,
    rows: np.ndarray,
    probabilities: np.ndarray,
    *,
    folds: bool = False,
) -> Scored:
    """Scored slices of `records`' rows `rows`; with `folds`, each row's fold from `parts`."""
    return Scored.of_records(
        [records[i] for i in rows],
        probabilities,
        folds=[str(int(parts[i])) for i in rows] if folds else None,
    )


def by_source(scored: Scored, aggregation: str, seed: int) -> dict[str, Any]:
    """Each source on its own: slice figures, patient figures where the source has patients of
    both classes, and the same against the folder labels where those differ from the labels
    used (e.g. CT-ICH's four misfiled patients, or slice labels in place of the folders')."""
    sources = np.array(scored.sources or [""] * len(scored.paths))
    found = {}
    for source in sorted(set(sources.tolist())):
        part = scored.subset(np.flatnonzero(sources == source))
        study = part.study_labels if part.study_labels is not None else _max_per_patient(part)
        figures = _label_figures(part, part.labels, study, aggregation, seed)
        known = int(part.slice_known.sum()) if part.slice_known is not None else 0
        figures["slice_labels"] = f"{known} of {len(part.paths)} slices"
        folder = part.folder_labels
        if folder is not None and not (
            np.array_equal(folder, part.labels) and np.array_equal(folder, study)
        ):
            against = _label_figures(part, folder, folder, aggregation, seed)
            if against["slice"]["roc_auc"] is not None:  # not when the folder is one class
                figures["against_folders"] = against
        if part.folds is not None and part.positions is not None:
            figures["position"] = position_figures(
                part.labels, part.probabilities, part.patients, part.positions, part.folds, seed
            )
        found[source] = figures
    return found


def _max_per_patient(scored: Scored) -> np.ndarray:
    positive: dict[str, int] = {}
    for patient, label in zip(scored.patients, scored.labels, strict=True):
        positive[patient] = max(positive.get(patient, 0), int(label))
    return np.array([positive[p] for p in scored.patients])


def _label_figures(
    scored: Scored, slice_labels: np.ndarray, study: np.ndarray, aggregation: str, seed: int
) -> dict[str, Any]:
    """Slice figures against `slice_labels`; patient figures against `study` (per slice)."""
    figures: dict[str, Any] = {
        "slice": level_figures(slice_labels, scored.probabilities, scored.patients, seed)
    }
    by_patient = dict(zip(scored.patients, study.tolist(), strict=True))
    if len(set(by_patient.values())) < 2:
        figures["patient"] = None
        figures["patient_note"] = "all its patients have one label: counted at slice level only"
        return figures
    patients, _, p_scores = metrics.patient_scores(
        scored.patients, slice_labels, scored.probabilities, aggregation
    )
    p_labels = np.array([by_patient[p] for p in patients])
    figures["patient"] = level_figures(p_labels, p_scores, patients, seed)
    return figures


def _patients(groups, labels, scores, sources, aggregation: str):
    """Patient labels and scores over the sources that have patients of both classes."""
    rows = patient_rows(list(groups), np.asarray(labels), list(sources))
    return metrics.patient_scores(
        np.asarray(groups)[rows], np.asarray(labels)[rows], np.asarray(scores)[rows], aggregation
    )


def checkpoint_check(cfg: TrainConfig, prepared: Any, results: list) -> dict[str, Any] | None:
    """Pooled OOF ROC-AUC of the kept epochs against each fold's last epoch, one view each.

    Under `checkpoint: best` the difference is what choosing the epoch on the validation
    patients themselves added to the figures. None for folds saved before epoch scores were kept.
    """
    if not results or any(not r.epoch_val_probabilities for r in results):
        return None
    parts, labels = prepared.parts, prepared.labels
    groups = np.array([r.patient_id for r in prepared.records])
    sources = np.array([r.source for r in prepared.records])
    cv = parts > 0

    def pooled(epoch_of: Callable[[Any], int]) -> dict[str, float | None]:
        scores = np.full(len(labels), np.nan)
        for r in results:
            scores[parts == r.fold] = r.epoch_val_probabilities[epoch_of(r)]
        _, p_labels, p_scores = _patients(
            groups[cv], labels[cv], scores[cv], sources[cv], cfg.study_aggregation
        )
        return {
            "slice_roc_auc": _safe(metrics.roc_auc, labels[cv], scores[cv]),
            "patient_roc_auc": _safe(metrics.roc_auc, p_labels, p_scores),
        }

    kept, last = pooled(lambda r: r.best_epoch - 1), pooled(lambda r: -1)
    return {
        "scored": "one view per epoch (no test-time augmentation), as during training",
        "kept_epochs": {"epochs": [r.best_epoch for r in results], **kept},
        "last_epochs": last,
        "gain_from_choosing": {
            key: None if kept[key] is None or last[key] is None else kept[key] - last[key]
            for key in kept
        },
    }


def _at(y, p, py, pp, slice_threshold, patient_threshold) -> dict[str, Any]:
    return {
        "slice": metrics.at_threshold(y, p, slice_threshold)
        if slice_threshold is not None
        else None,
        "patient": metrics.at_threshold(py, pp, patient_threshold)
        if patient_threshold is not None
        else None,
    }


def _fold_figures(result, labels, groups, sources, parts, oof, cfg) -> dict[str, Any]:
    mask = parts == result.fold
    patients, p_labels, p_scores = _patients(
        groups[mask], labels[mask], oof[mask], sources[mask], cfg.study_aggregation
    )
    return {
        "fold": result.fold,
        "slices": int(mask.sum()),
        "patients": len(patients),
        "best_epoch": result.best_epoch,
        "chosen_on": result.chosen_on,
        "slice_roc_auc": _safe(metrics.roc_auc, labels[mask], oof[mask]),
        "patient_roc_auc": _safe(metrics.roc_auc, p_labels, p_scores),
        "hard_examples_mined": result.hard_examples_mined,
        "seconds": result.seconds,
    }


def _holdout_figures(prepared, holdout, cfg, slice_threshold, patient_threshold) -> dict[str, Any]:
    mask = prepared.parts == splits.HOLDOUT
    labels = prepared.labels[mask]
    groups = np.array([r.patient_id for r in prepared.records])[mask]
    sources = np.array([r.source for r in prepared.records])[mask]
    patients, p_labels, p_scores = _patients(
        groups, labels, holdout, sources, cfg.study_aggregation
    )
    return {
        "note": "ensemble mean of the fold models; thresholds were chosen on OOF, not here",
        "slice": level_figures(labels, holdout, groups, cfg.seed),
        "patient": level_figures(p_labels, p_scores, patients, cfg.seed),
        "at_operating_point": _at(
            labels, holdout, p_labels, p_scores, slice_threshold, patient_threshold
        ),
        "by_source": by_source(
            scored_rows(prepared.records, prepared.parts, np.flatnonzero(mask), holdout),
            cfg.study_aggregation,
            cfg.seed,
        ),
    }


def _spread(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None, "values": values}
    return {
        "mean": float(np.mean(present)),
        "std": float(np.std(present)),
        "min": float(np.min(present)),
        "max": float(np.max(present)),
        "values": values,
    }


def caveats(prepared: Any, cfg: TrainConfig) -> list[str]:
    """Plain-word warnings that travel with the bundle."""
    notes = list(prepared.dataset.notes)
    if prepared.decoded.bad:
        notes.append(f"{len(prepared.decoded.bad)} unreadable file(s) were skipped (report.md)")
    if prepared.audit["identical_images_across_parts"]:
        notes.append(
            f"{prepared.audit['identical_images_across_parts']} image(s) with identical pixels "
            "occur in more than one split part"
        )
    notes.append(selection_note(cfg))
    return notes


def render(cfg: TrainConfig, prepared: Any, results: list, summary: dict[str, Any]) -> str:
    """report.md: what was trained on what, what was skipped, and how good it is."""
    data = prepared.dataset.summary()
    audit = prepared.audit
    lines = [
        "# Training run report",
        "",
        "Research software, not for clinical use.",
        "",
        "## Data",
        f"- {data['total_slices']} readable slices from {data['total_patients']} patients: "
        + ", ".join(
            f"{name} {data['slices'].get(name, 0)} slices / {data['patients'][name]} patients"
            for name in ("Normal", "Stroke")
        ),
        f"- Unreadable files skipped: {len(prepared.decoded.bad)}",
    ]
    lines += [
        f"  - `{prepared.dataset.records[i].rel_path}`: {why}" for i, why in prepared.decoded.bad
    ]
    lines += [f"- Ignored: `{path}` ({why})" for path, why in prepared.dataset.ignored]
    lines += [f"- Note: {note}" for note in prepared.dataset.notes]
    lines += [f"- Labels: {line.strip()}" for line in describe_labels(prepared.labels_used)]
    lines += [
        "",
        "## Split and leakage audit",
        f"- Patients in more than one part: {audit['patients_in_several_parts']} (must be 0)",
        f"- Images with identical pixels across parts: {audit['identical_images_across_parts']}",
        "",
        "| part | normal slices | stroke slices | normal patients | stroke patients |",
        "|---|---|---|---|---|",
    ]
    for part, row in audit["balance"].items():
        lines.append(
            f"| {part} | {row['normal_slices']} | {row['stroke_slices']} | "
            f"{row['normal_patients']} | {row['stroke_patients']} |"
        )
    lines += [
        "",
        "## Training",
        f"- Backbone {cfg.backbone} ({results[0].weights_source}), {cfg.image_size} px, "
        f"{cfg.epochs} epochs ({cfg.freeze_epochs} frozen), loss {cfg.loss}, balance {cfg.balance}",
        "",
        "| fold | best epoch | chosen on | slice AUC | patient AUC | mined | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in summary["folds"]:
        lines.append(
            f"| {f['fold']} | {f['best_epoch']} | {f['chosen_on']} | "
            f"{number(f['slice_roc_auc'])} | {number(f['patient_roc_auc'])} | "
            f"{f['hard_examples_mined']} | {f['seconds']} |"
        )
    lines += ["", *oof_table(summary), "", selection_note(cfg)]
    check = summary.get("checkpoint_check")
    if check and cfg.checkpoint == "best":
        kept, last = check["kept_epochs"], check["last_epochs"]
        lines += [
            "",
            f"- Checkpoint check (one view): pooled OOF ROC-AUC of the kept epochs "
            f"{number(kept['slice_roc_auc'])} slice / {number(kept['patient_roc_auc'])} "
            f"patient; of each fold's last epoch {number(last['slice_roc_auc'])} / "
            f"{number(last['patient_roc_auc'])}. The difference is what choosing the epoch on "
            "the scored patients added.",
        ]
    if summary["holdout"]:
        hold = summary["holdout"]
        lines += [
            "",
            "## Holdout (patients never used for training or selection)",
            f"- slice ROC-AUC {number(hold['slice']['roc_auc'])}, "
            f"patient ROC-AUC {number(hold['patient']['roc_auc'])}",
            *source_table(hold.get("by_source") or {}),
        ]
    return "\n".join(lines) + "\n"


def oof_table(summary: dict[str, Any]) -> list[str]:
    """The out-of-fold figures as a Markdown table, and the fold spread (report and card)."""
    lines = [
        "## Out-of-fold performance (95% intervals resample patients)",
        "",
        "| level | n | ROC-AUC | 95% CI | PR-AUC |",
        "|---|---|---|---|---|",
    ]
    for level in ("slice", "patient"):
        fig = summary[level]
        lines.append(
            f"| {level} | {fig['n']} | {number(fig['roc_auc'])} | "
            f"{interval(fig['roc_auc_ci95'])} | {number(fig['pr_auc'])} |"
        )
    spread = summary["fold_spread"]["slice_roc_auc"]
    return [
        *lines,
        "",
        f"Fold spread of the slice ROC-AUC: {number(spread['min'])} to {number(spread['max'])} "
        f"(mean {number(spread['mean'])}, sd {number(spread['std'])}).",
        *source_table(summary.get("by_source") or {}),
        *position_lines(summary.get("by_source") or {}),
    ]


def position_lines(by_source: dict[str, Any]) -> list[str]:
    """What the slice's level alone scores, and the model beyond it (ml.evaluate.position)."""
    lines = []
    for source, figures in by_source.items():
        found = figures.get("position")
        if not found or found["baseline_roc_auc"] is None:
            continue
        lines.append(
            f"- {source}: the slice's level alone (the lesion share at its tenth of the stack "
            f"in the other folds) scores slice ROC-AUC {number(found['baseline_roc_auc'])} "
            f"({interval(found['baseline_roc_auc_ci95'])}); the model, comparing only slices "
            f"at the same level, {number(found['matched_roc_auc'])} "
            f"({interval(found['matched_roc_auc_ci95'])}). Slice figures above the first "
            "number are what the model sees beyond the level; the second is that part alone."
        )
    if not lines:
        return []
    return ["", "Lesions cluster at some levels of the head, which anatomy reveals:", "", *lines]


def source_table(by_source: dict[str, Any]) -> list[str]:
    """Each source's figures on its own, and against its folder labels where those differ."""
    if len(by_source) < 2 and not any("against_folders" in f for f in by_source.values()):
        return []
    lines = [
        "",
        "Each source on its own (ROC-AUC, 95% CI; patients only where a source has both classes):",
        "",
        "| source | slices | slice ROC-AUC | patients | patient ROC-AUC | against folder labels |",
        "|---|---|---|---|---|---|",
    ]
    for source, figures in by_source.items():
        patient = figures.get("patient")
        folders = figures.get("against_folders")
        lines.append(
            f"| {source} | {figures['slice']['n']} | {_auc(figures['slice'])} | "
            f"{patient['n'] if patient else '-'} | "
            f"{_auc(patient) if patient else 'slice level only'} | "
            f"{_folder_words(folders) if folders else 'the same labels'} |"
        )
    return lines


def _auc(level: dict[str, Any]) -> str:
    return f"{number(level['roc_auc'])} ({interval(level['roc_auc_ci95'])})"


def _folder_words(figures: dict[str, Any]) -> str:
    patient = figures.get("patient")
    text = f"slice {_auc(figures['slice'])}"
    return text + (f", patient {_auc(patient)}" if patient else "")
