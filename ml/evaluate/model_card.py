"""model_card.md: what a bundle is for, what it was trained on, and how far to trust it."""

from __future__ import annotations

from typing import Any

from ml.config import SYNTHETIC_ORIGIN, TrainConfig
from ml.data.sources import describe_labels
from ml.evaluate.numbers import interval, number, percent, percent_interval
from ml.evaluate.report import oof_table
from ml.metrics.thresholds import OperatingPoint

INTENDED_USE = (
    "Research on classifying axial brain-CT slices as Normal or Stroke, and on how such "
    "classifiers should be evaluated. **Not for clinical use**: the outputs are not a diagnosis "
    "and must not guide the care of any patient."
)
LIMITATIONS = [
    "Labels are per patient: every slice of a stroke patient is labelled Stroke, including "
    "slices that show no lesion, so slice-level figures understate what a slice shows and "
    "patient-level figures are the ones to read.",
    "No external validation unless an evaluation report from another site says otherwise: "
    "all figures here come from cross-validation on one dataset.",
    "The operating points were chosen on the same out-of-fold predictions they are reported "
    "on, which makes the figures at them somewhat optimistic.",
    "Ensemble probabilities on new data average K models, while out-of-fold probabilities come "
    "from one model each; thresholds transfer approximately, not exactly.",
]


def render(
    *,
    name: str,
    cfg: TrainConfig,
    data: dict[str, Any],
    weights_source: str,
    summary: dict[str, Any],
    slice_points: list[OperatingPoint],
    patient_points: list[OperatingPoint],
    active: tuple[str, str],
    calibration: dict[str, Any],
    uncertainty: dict[str, Any],
    audit: dict[str, Any],
    notes: list[str],
    point_figures: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The card as Markdown.

    `point_figures`: per level, each operating point's figures as the OOF report holds them,
    with their 95% Wilson intervals (`ci95`).
    """
    lines = [
        f"# Model card: {name}",
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Data",
        f"- Source: {data.get('source_name')} (content fingerprint {data.get('fingerprint')})",
        *_origin_lines(data.get("origin")),
        f"- Slices: {_pairs(data['slices'])}; patients: {_pairs(data['patients'])}",
        f"- Unreadable files skipped: {data.get('unreadable_files', 0)}",
        "",
        "## Labels (trained and scored on)",
        *label_lines(summary),
        "",
        "## Split",
        f"- Patient-grouped stratified {cfg.folds}-fold cross-validation (seed {cfg.seed})"
        + (f", after a {cfg.holdout_frac:.0%} patient holdout" if cfg.holdout_frac else ""),
        f"- Leakage audit: {audit['patients_in_several_parts']} patients in more than one part; "
        f"{audit['identical_images_across_parts']} identical images across parts",
        "",
        "## Training recipe",
        f"- {cfg.backbone}, initialised from {weights_source}; {cfg.image_size} px, "
        f"windows {[list(w) for w in cfg.windows]}"
        + ("; cropped to the head" if cfg.crop_head else "")
        + _input_words(cfg.input_mode),
        *_head_words(cfg),
        f"- {cfg.epochs} epochs ({cfg.freeze_epochs} with the backbone frozen), batch "
        f"{cfg.batch_size}, AdamW (lr {cfg.lr}, head {cfg.head_lr}), warm-up and cosine decay",
        f"- Loss {cfg.loss}"
        + (
            f" (alpha {cfg.focal_alpha} on stroke, gamma {cfg.focal_gamma})"
            if cfg.loss == "focal"
            else ""
        )
        + f"; class balancing: {cfg.balance}; "
        + (
            f"hard-example mining after epoch {cfg.hnm_epoch} ({cfg.hnm_mode})"
            if cfg.hnm_epoch
            else "no hard-example mining"
        )
        + (f"; mixup (alpha {cfg.mixup_alpha})" if cfg.mixup_alpha else "")
        + (f"; label smoothing {cfg.label_smoothing}" if cfg.label_smoothing else ""),
        f"- Test-time views: {', '.join(cfg.tta_views)}; patient score: {cfg.study_aggregation} "
        "of slice scores",
        "",
        *oof_table(summary),
    ]
    check = summary.get("checkpoint_check")
    if check and cfg.checkpoint == "best":
        gain = check["gain_from_choosing"]
        lines += [
            "",
            "Each fold's epoch was chosen on the patients it was then scored on. Scored with "
            "one view, the kept epochs reach "
            f"{number(check['kept_epochs']['slice_roc_auc'])} slice / "
            f"{number(check['kept_epochs']['patient_roc_auc'])} patient ROC-AUC and each fold's "
            f"last epoch {number(check['last_epochs']['slice_roc_auc'])} / "
            f"{number(check['last_epochs']['patient_roc_auc'])}: choosing changed them by "
            f"{_signed(gain['slice_roc_auc'])} / {_signed(gain['patient_roc_auc'])}.",
        ]
    lines += [
        "",
        "## Operating points (chosen on out-of-fold predictions)",
    ]
    for level, points, current in (
        ("slice", slice_points, active[0]),
        ("patient", patient_points, active[1]),
    ):
        lines += [
            "",
            f"{level.capitalize()} level, active: **{current}** (95% Wilson intervals)",
            "",
            "| name | threshold | sensitivity | specificity | PPV | NPV |",
            "|---|---|---|---|---|---|",
        ]
        figures = (point_figures or {}).get(level, {})
        for p in points:
            intervals = figures.get(p.name, {}).get("ci95") or {}
            rates = [_with_interval(p.metrics, intervals, key) for key in RATES]
            lines.append(f"| {p.name} | {number(p.threshold)} | {' | '.join(rates)} |")
    before, after = calibration["before"], calibration["after"]
    lines += [
        "",
        "## Calibration",
        f"- {calibration['method']} scaling, fitted on {calibration['fitted_on']}; "
        f"figures {calibration['evaluated_on']}",
        f"- ECE {number(before['ece'])} before, {number(after['ece'])} after; "
        f"Brier {number(before['brier'])} before, {number(after['brier'])} after",
        "",
        "## Uncertainty flag",
        f"- A slice is flagged when its probability is within {uncertainty['half_width']:.3f} of "
        f"the threshold (the {uncertainty['share']:.0%} of out-of-fold slices nearest it: "
        f"accuracy {number(uncertainty['accuracy_inside'])} inside, "
        f"{number(uncertainty['accuracy_outside'])} outside), or when the fold models' standard "
        f"deviation exceeds {uncertainty['fold_std_limit']:.3f} ({uncertainty['fold_std_note']}).",
        "",
        "## Known limitations",
        *[f"- {text}" for text in LIMITATIONS],
        *[f"- {text}" for text in notes],
    ]
    return "\n".join(lines) + "\n"


def label_lines(summary: dict[str, Any]) -> list[str]:
    """Which labels each source brought, and the rule that turns slices into a patient score."""
    lines = [f"- {line.strip()}" for line in describe_labels(summary.get("labels") or [])]
    if not lines:
        lines = ["- Labels from the class folders (each slice carries its patient's label)"]
    lines.append(
        "- Slices are trained and scored on their slice label where one is given, else on their "
        "patient's label; patients on their patient label"
    )
    lines += cam_lines(summary.get("cam_in_lesion") or {})
    choice = summary.get("aggregation_choice")
    if choice:
        tried = ", ".join(f"{name} {number(value)}" for name, value in choice["candidates"].items())
        lines.append(
            f"- Patient score: {choice['chosen']} of the slice scores, chosen on "
            f"{choice['chosen_on']} ({tried})"
        )
    return lines


def cam_lines(cam: dict[str, Any]) -> list[str]:
    """Grad-CAM against the lesion masks: the layer the bundle draws, out of fold and on held-out
    patients, then the other layers measured on the same slices."""
    layer = cam.get("layer", "last")  # bundles before the choice drew from the last stage
    lines = []
    for where, part in (("out of fold", cam), ("held-out patients", cam.get("holdout") or {})):
        for source, figures in part.get("by_source", {}).items():
            lines.append(
                f"- Grad-CAM ({layer} layer) against the lesion masks of {source} "
                f"({figures['slices']} lesion slices, {where}): the hottest pixel lies in the "
                f"lesion on {percent(figures['peak_in_lesion'])} "
                f"({percent_interval(figures['peak_in_lesion_ci95'])}); "
                f"{percent(figures['heat_inside'])} of the heat falls inside the lesion, "
                f"which covers {percent(figures['lesion_area'])} of the image"
                + _ceiling_words(figures)
            )
        others = [
            f"{name} {percent(figures[source]['peak_in_lesion'])} ({source})"
            for name, figures in part.get("by_layer", {}).items()
            for source in part.get("by_source", {})
            if name != layer and source in figures
        ]
        if others:
            lines.append(f"  - the same slices at the other CAM layers: {', '.join(others)}")
    return lines


def _ceiling_words(figures: dict[str, Any]) -> str:
    """The most any map on the layer's grid could reach (runs before the figure lack it)."""
    if "peak_in_lesion_ceiling" not in figures:
        return ""
    rows, columns = figures["grid"]
    return (
        f"; a perfect map on this {rows} x {columns} grid would reach "
        f"{percent(figures['peak_in_lesion_ceiling'])}"
    )


RATES = ("sensitivity", "specificity", "ppv", "npv")


def _with_interval(figures: dict[str, Any], intervals: dict[str, Any], key: str) -> str:
    """'0.750 (0.551–0.880)'; the value alone where no interval is known."""
    value = number(figures.get(key))
    if intervals.get(key) is None:
        return value
    return f"{value} ({interval(intervals[key])})"


def _origin_lines(origin: str | None) -> list[str]:
    if origin == SYNTHETIC_ORIGIN:
        return [
            f"- Origin: **{origin}, not real CT**. This model knows nothing about real scans; "
            "its outputs on them mean nothing."
        ]
    return [f"- Origin: {origin}"] if origin else []


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _input_words(mode: str) -> str:
    if mode == "slice":
        return "; one slice per input"
    aligned = ", neighbours redrawn in its crop" if mode == "neighbours_aligned" else ""
    return (
        f"; 2.5D input (slices k-1, k, k+1 of one patient as the channels{aligned}; a slice "
        "uploaded alone fills its own neighbours)"
    )


MAP_LAYER_WORDS = {  # what a lesion-map head reads, by `mask_layer`
    "last": "the last feature map",
    "stride16": "the stride-16 stage (later stages dropped)",
    "stride8": "the stride-8 stage beside the stride-16 one (later stages dropped)",
}


def _head_words(cfg: TrainConfig) -> list[str]:
    """How the slice's score is made, where the head is not the reference one, and the masks'
    part in training."""
    lines = []
    if cfg.head == "lesion_map":
        layer = MAP_LAYER_WORDS[cfg.mask_layer]
        lines.append(
            f"- Head: a lesion logit per cell of {layer}, pooled by log-sum-exp into the "
            "slice's score"
        )
    if cfg.mask_loss_weight > 0:
        lines.append(
            f"- Lesion masks train the map of {cfg.mask_layer} cells "
            f"(loss weight {cfg.mask_loss_weight})"
        )
    return lines
