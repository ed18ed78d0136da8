"""One training recipe, end to end, on real data: patient-grouped OOF figures and wall time.

    python benchmarks/bench_accuracy.py --data DIR --preset cpu
    python benchmarks/bench_accuracy.py --data DIR --preset cpu --set crop_head=true

Trains the recipe's K-fold ensemble with `ml train` (the same code, cache and bundle), then prints
slice- and patient-level ROC-AUC of the out-of-fold predictions with 95% intervals resampling
patients, the spread over folds, and the wall time. Thresholds and recipes are judged on these
OOF figures only. Record every recipe tried, good or bad, in benchmarks/RESULTS.md. The last line
reads `slice_auc=<x> patient_auc=<y> wall_min=<z>`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ml import make_config, parse_override, run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled folder, e.g. ctich")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--out", type=Path, help="bundle folder to keep (default: a temporary one)")
    args = parser.parse_args()
    overrides = dict(parse_override(text) for text in args.set)
    cfg = make_config(args.preset, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "bundle"
        started = time.perf_counter()
        run_training(args.data, out, cfg, progress=False, resume=args.out is not None)
        wall = time.perf_counter() - started
        metrics = json.loads((out / "metrics.json").read_text())
    recipe = " ".join([f"preset={args.preset}", *args.set])
    spread = metrics["fold_spread"]["slice_roc_auc"]
    print(f"recipe: {recipe}")
    for level in ("slice", "patient"):
        m = metrics[level]
        low, high = m["roc_auc_ci95"]
        print(
            f"{level:8s} ROC-AUC {m['roc_auc']:.3f} (95% CI {low:.3f}-{high:.3f}) "
            f"PR-AUC {m['pr_auc']:.3f} n={m['n']}"
        )
    print(
        f"fold spread of slice ROC-AUC: {spread['min']:.3f}-{spread['max']:.3f} "
        f"(mean {spread['mean']:.3f}); wall {wall / 60:.1f} min"
    )
    print(
        f"slice_auc={metrics['slice']['roc_auc']:.3f} "
        f"patient_auc={metrics['patient']['roc_auc']:.3f} wall_min={wall / 60:.1f}"
    )


if __name__ == "__main__":
    main()
