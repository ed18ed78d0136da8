"""One training recipe, end to end, on real data: out-of-fold figures per source and wall time.

    python benchmarks/bench_accuracy.py --data ctich=DIR/ctich --labels DIR/ctich/slice_labels.csv \
        --data phe-sich=DIR/phe-sich/labels.csv --preset cpu [--baseline ctich]

Trains the recipe's K-fold ensemble with `ml train` (the same code, cache and bundle), then
prints, out of fold with 95% intervals resampling patients, for each source: slice-level ROC-AUC
against the labels trained on (slice labels where given) and against the folders, patient-level
ROC-AUC against the patient labels used (corrected, where a labels file corrects the folders) and
against the folders (sources with patients of both classes only), the share of lesion slices
whose Grad-CAM peak lies in the outlined lesion (sources with masks), and the wall time.

`--baseline NAME` then trains the same recipe on that source alone with its folder labels only,
on the same patients' folds, and prints the same figures: what the better labels were worth.
Thresholds and recipes are judged on OOF figures only; record every recipe tried, good or bad, in
benchmarks/RESULTS.md. The last line reads `<source>_patient_auc=<x> ... wall_min=<z>`.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from ml import make_config, parse_override, run_training
from ml.data import Source, parse_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="[NAME=]PATH")
    parser.add_argument("--labels", action="append", default=[], type=Path, metavar="CSV")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--baseline", metavar="NAME", help="also train NAME alone on its folders")
    parser.add_argument("--out", type=Path, help="bundle folder to keep (default: a temporary one)")
    args = parser.parse_args()
    cfg = make_config(args.preset, **dict(parse_override(text) for text in args.set))
    sources = parse_sources(args.data, args.labels)
    print(f"recipe: preset={args.preset} {' '.join(args.set)}; sources: {_names(sources)}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "bundle"
        metrics, wall = _train(sources, out, cfg, resume=args.out is not None)
        last = _report(metrics, wall)
        if args.baseline:
            [alone] = [s for s in sources if s.name == args.baseline]
            split = _split_of(out, alone.name, Path(tmp) / "split.csv", several=len(sources) > 1)
            print(f"\nbaseline: {alone.name} alone, its folder labels only, the same folds")
            base = Path(tmp) / "baseline"
            metrics, wall = _train([Source(alone.name, alone.data)], base, cfg, split=split)
            _report(metrics, wall)
    print(last)


def _names(sources) -> str:
    return ", ".join(f"{s.name}" + (f" (+{s.labels.name})" if s.labels else "") for s in sources)


def _train(sources, out: Path, cfg, *, resume: bool = False, split: Path | None = None):
    started = time.perf_counter()
    run_training(sources, out, cfg, progress=False, resume=resume, split_file=split)
    wall = time.perf_counter() - started
    return json.loads((out / "metrics.json").read_text()), wall


def _split_of(bundle: Path, source: str, target: Path, *, several: bool) -> Path:
    """The folds of `source`'s patients in `bundle`, as a split file for training it alone."""
    with (bundle / "oof.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("source", source) == source]
    prefix = f"{source}/" if several else ""
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "fold"])
        writer.writerows([r["path"].removeprefix(prefix), r["fold"]] for r in rows)
    return target


def _report(metrics: dict, wall: float) -> str:
    last = []
    for source, figures in metrics["by_source"].items():
        folders = figures.get("against_folders") or {}
        print(f"{source}:")
        print(
            f"  slice   ROC-AUC {_auc(figures['slice'])} (labels used: {figures['slice_labels']})"
        )
        if folders:
            print(f"  slice   ROC-AUC {_auc(folders['slice'])} against the folders")
        if figures.get("patient"):
            print(f"  patient ROC-AUC {_auc(figures['patient'])}")
            if folders.get("patient"):
                print(f"  patient ROC-AUC {_auc(folders['patient'])} against the folders")
            last.append(f"{source}_patient_auc={figures['patient']['roc_auc']:.3f}")
        else:
            print(f"  patient: {figures.get('patient_note')}")
        last.append(f"{source}_slice_auc={figures['slice']['roc_auc']:.3f}")
        position = figures.get("position")
        if position and position["baseline_roc_auc"] is not None:
            print(f"  slice   ROC-AUC {_auc(_as_level(position, 'baseline'))} from the level alone")
            print(f"  slice   ROC-AUC {_auc(_as_level(position, 'matched'))} at the same level")
            last.append(f"{source}_matched_auc={position['matched_roc_auc']:.3f}")
    last += _cam_report(metrics.get("cam_in_lesion") or {})
    holdout = (metrics.get("holdout") or {}).get("by_source", {})
    for source, figures in holdout.items():
        print(f"{source}, held-out patients (the ensemble; nothing chosen on them):")
        print(f"  slice   ROC-AUC {_auc(figures['slice'])}")
        if figures.get("patient"):
            print(f"  patient ROC-AUC {_auc(figures['patient'])}")
    choice = metrics.get("aggregation_choice")
    if choice:
        print(
            f"patient score: {choice['chosen']} (chosen on OOF among {list(choice['candidates'])})"
        )
    print(f"wall {wall / 60:.1f} min")
    return " ".join([*last, f"wall_min={wall / 60:.1f}"])


def _cam_report(cam: dict) -> list[str]:
    """Grad-CAM peak in the lesion at every layer measured, out of fold and held out."""
    last = []
    for where, part in (("out of fold", cam), ("held out", cam.get("holdout") or {})):
        for layer, by_source in part.get("by_layer", {"last": part.get("by_source", {})}).items():
            drawn = " (drawn)" if layer == cam.get("layer", "last") else ""
            for source, figures in by_source.items():
                low, high = figures["peak_in_lesion_ci95"]
                print(
                    f"{source}, {where}, CAM layer {layer}{drawn}: peak in the lesion on "
                    f"{figures['peak_in_lesion']:.1%} ({low:.1%}-{high:.1%}) of "
                    f"{figures['slices']} lesion slices; heat inside {figures['heat_inside']:.1%}, "
                    "lesion area "
                    f"{figures['lesion_area']:.1%}"
                    + (
                        f"; a perfect map on its {figures['grid'][0]} x {figures['grid'][1]} "
                        f"grid: {figures['peak_in_lesion_ceiling']:.1%}"
                        if "peak_in_lesion_ceiling" in figures
                        else ""
                    )
                )
                if drawn and where == "out of fold":
                    last.append(f"{source}_cam_peak_in_lesion={figures['peak_in_lesion']:.3f}")
    return last


def _as_level(position: dict, name: str) -> dict:
    return {
        "roc_auc": position[f"{name}_roc_auc"],
        "roc_auc_ci95": position[f"{name}_roc_auc_ci95"],
        "n": "the same slices",
    }


def _auc(level: dict) -> str:
    low, high = level["roc_auc_ci95"] or (float("nan"), float("nan"))
    return f"{level['roc_auc']:.3f} (95% CI {low:.3f}-{high:.3f}), n={level['n']}"


if __name__ == "__main__":
    main()
