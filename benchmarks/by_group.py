"""Which lesions a bundle finds: slice figures per group of lesion slices, out of fold.

    python benchmarks/by_group.py BUNDLE --labels ctich=DIR/ctich/slice_labels.csv \
        [--column subtypes] [--labels phe-sich=DIR/phe-sich/labels.csv --column mask]

A source's pooled slice ROC-AUC hides what kind of lesion the model misses. CT-ICH is a trauma
cohort: most of its bleeding slices are epidural or subdural (thin, against the skull), while
PHE-SICH's are spontaneous intraparenchymal haematomas. This reads a column of a labels file
(`subtypes` by default; cells like `Intraparenchymal+Subdural` count in each group they name)
and prints, for each group of the source's lesion slices, against all of that source's
lesion-free slices: ROC-AUC with a 95% interval resampling patients, and the share flagged at the
bundle's active slice threshold (Wilson interval). Out of fold (oof.csv), and on the held-out
patients too where the bundle has them (holdout.csv). Nothing is chosen here; it only describes.

`--column mask` groups a source with lesion masks (PHE-SICH) by the lesion's area instead: the
filled outline (ml.data.masks.lesion_region) in the image's pixels, cut at the terciles of that
source's lesion slices into small, medium and large.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ml import lesion_region, metrics, read_thresholds

EMPTY = ("", "none")  # cells that name no group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--labels", action="append", required=True, metavar="[NAME=]CSV")
    parser.add_argument(
        "--column",
        action="append",
        help="the group column of each labels file, in order (default subtypes); mask: by area",
    )
    args = parser.parse_args()
    points, active = read_thresholds(args.bundle / "thresholds.json")
    threshold = next(p.threshold for p in points if p.name == active)
    print(f"slice threshold {threshold:.3f} ({active})")
    columns = args.column or ["subtypes"]
    sources = []  # (source name, its groups): each labels file (and its masks) read once
    for index, text in enumerate(args.labels):
        source, _, path = text.rpartition("=")
        column = columns[min(index, len(columns) - 1)]
        groups = read_sizes(Path(path)) if column == "mask" else read_groups(Path(path), column)
        sources.append((source, groups))
    for table in ("oof.csv", "holdout.csv"):
        if not (args.bundle / table).is_file():
            continue
        with (args.bundle / table).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for source, groups in sources:
            picked = [r for r in rows if not source or r.get("source") == source]
            print(f"\n{source or 'all'}, {table}:")
            for row in group_figures(picked, groups, threshold, prefix=f"{source}/"):
                print(_line(row))


def read_groups(path: Path, column: str) -> dict[str, list[str]]:
    """path -> the groups its cell names (split on '+'), for every row of a labels file."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or []):
            raise SystemExit(f"{path} has no column {column!r}; it has {reader.fieldnames}")
        return {
            row["path"]: [g for g in row[column].split("+") if g.strip().lower() not in EMPTY]
            for row in reader
        }


def read_sizes(path: Path) -> dict[str, list[str]]:
    """path -> [small | medium | large] for every slice whose mask (column `mask`, relative to
    the labels file) shows a lesion, cut at the terciles of their areas."""
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("mask")]
    if not rows:
        raise SystemExit(f"{path} has no `mask` column with masks in it")
    areas = {}
    for row in rows:
        with Image.open(path.parent / row["mask"]) as image:
            area = int(lesion_region(np.asarray(image.convert("L")) > 0).sum())
        if area:
            areas[row["path"]] = area
    cuts = np.quantile(list(areas.values()), [1 / 3, 2 / 3])
    names = [f"1 small (<{cuts[0]:.0f} px)", "2 medium", f"3 large (>={cuts[1]:.0f} px)"]
    return {p: [names[int(np.searchsorted(cuts, a, side="right"))]] for p, a in areas.items()}


def group_figures(
    rows: Sequence[dict[str, str]],
    groups: dict[str, list[str]],
    threshold: float,
    *,
    prefix: str = "",
    resamples: int = 1000,
) -> list[dict]:
    """One figure set per group (and `all lesions` first): that group's lesion slices against
    every lesion-free slice of `rows`. Lesion slices the labels file does not name are counted
    in `all lesions` only."""
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["probability"]) for r in rows])
    patients = [r["patient_id"] for r in rows]
    named = [groups.get(r["path"].removeprefix(prefix), []) for r in rows]
    members = {"all lesions": labels == 1}
    for name in sorted({g for cell in named for g in cell}):
        members[name] = np.array([name in cell for cell in named]) & (labels == 1)
    found = []
    for name, positive in members.items():
        keep = positive | (labels == 0)
        y, p = labels[keep], scores[keep]
        who = [patients[i] for i in np.flatnonzero(keep)]
        flagged = int((scores[positive] >= threshold).sum())
        found.append(
            {
                "group": name,
                "slices": int(positive.sum()),
                "patients": len({patients[i] for i in np.flatnonzero(positive)}),
                "roc_auc": metrics.roc_auc(y, p) if 0 < y.sum() < len(y) else None,
                "roc_auc_ci95": _interval(y, p, who, resamples),
                "flagged": flagged,
                "flagged_ci95": metrics.wilson_ci(flagged, int(positive.sum())),
            }
        )
    return found


def _interval(y: np.ndarray, p: np.ndarray, who: list[str], resamples: int):
    if not 0 < y.sum() < len(y):
        return None
    try:
        return metrics.bootstrap_ci(y, p, who, n_resamples=resamples)
    except ValueError:  # too few patients for a resample to hold both classes
        return None


def _line(row: dict) -> str:
    auc = "-" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
    if row["roc_auc_ci95"]:
        auc += " ({:.3f}-{:.3f})".format(*row["roc_auc_ci95"])
    share = row["flagged"] / row["slices"] if row["slices"] else float("nan")
    flagged = f"{row['flagged']}/{row['slices']} flagged ({share:.0%}"
    flagged += ", {:.0%}-{:.0%})".format(*row["flagged_ci95"]) if row["flagged_ci95"] else ")"
    return f"  {row['group']:<18} {row['patients']:>3} patients  ROC-AUC {auc}  {flagged}"


if __name__ == "__main__":
    main()
