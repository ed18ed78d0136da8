"""Patient-grouped holdout and folds, and the audit that proves they do not leak.

Order matters: the holdout is drawn first, by patient; the folds are made over the rest with
`StratifiedGroupKFold`; class balancing happens later, inside each fold's training part.
A part is a fold number (1..K) or 0 for the holdout.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ml.errors import UserError

HOLDOUT = 0


class LeakageError(UserError):
    """A patient sits on both sides of a split; training must not start."""


def patient_labels(labels: Sequence[int], groups: Sequence[str]) -> dict[str, int]:
    """A patient is a stroke patient if any of their slices is labelled stroke."""
    result: dict[str, int] = {}
    for label, group in zip(labels, groups, strict=True):
        result[group] = max(result.get(group, 0), int(label))
    return result


def assign_parts(
    labels: Sequence[int],
    groups: Sequence[str],
    *,
    folds: int,
    holdout_frac: float,
    seed: int,
    strata: Sequence[str] | None = None,
) -> np.ndarray:
    """Part of each record: 0 = holdout, 1..folds = the fold whose validation set holds it.

    Holdout and folds are drawn by patient and stratified by the patient's label and, with
    several sources, by source (`strata`: each record's source), so every fold holds its share
    of each hospital's positive and negative patients.
    """
    labels_arr = np.asarray(labels)
    groups_arr = np.asarray(groups)
    stratum = _patient_strata(labels, groups, strata)
    parts = np.full(len(labels_arr), -1, dtype=int)
    holdout = _draw_holdout(stratum, holdout_frac, seed)
    in_holdout = np.isin(groups_arr, sorted(holdout))
    parts[in_holdout] = HOLDOUT
    rest = np.flatnonzero(~in_holdout)
    n_patients = len(set(groups_arr[rest]))
    if n_patients < folds:
        raise ValueError(f"{n_patients} patients cannot fill {folds} folds; use fewer folds")
    names = sorted(set(stratum.values()))
    y = np.array([names.index(stratum[g]) for g in groups_arr[rest]])
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(
        splitter.split(np.zeros(len(rest)), y, groups_arr[rest]), start=1
    ):
        parts[rest[val]] = fold
    return parts


def _patient_strata(
    labels: Sequence[int], groups: Sequence[str], strata: Sequence[str] | None
) -> dict[str, str]:
    """Each patient's stratum: its source (if given) and its label, e.g. "ctich:1"."""
    by_patient = patient_labels(labels, groups)
    if strata is None:
        return {p: str(y) for p, y in by_patient.items()}
    source = dict(zip(groups, strata, strict=True))
    return {p: f"{source[p]}:{y}" for p, y in by_patient.items()}


def _draw_holdout(stratum: dict[str, str], frac: float, seed: int) -> set[str]:
    """Patients for the holdout: the same fraction of each stratum (at least one of each)."""
    if frac <= 0:
        return set()
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for name in sorted(set(stratum.values())):
        patients = sorted(p for p, s in stratum.items() if s == name)
        count = max(1, round(frac * len(patients)))
        if count >= len(patients):
            raise ValueError(
                f"holdout_frac {frac} leaves no patient of {_stratum_words(name)} to train on"
            )
        chosen.update(rng.choice(patients, size=count, replace=False).tolist())
    return chosen


def _stratum_words(name: str) -> str:
    source, _, label = name.rpartition(":")
    return f"class {label}" + (f" in {source}" if source else "")


def audit(
    labels: Sequence[int],
    groups: Sequence[str],
    parts: Sequence[int],
    pixel_hashes: Sequence[str | None],
) -> dict[str, object]:
    """What could make the figures dishonest, computed from the assignment itself."""
    parts_of_patient: dict[str, set[int]] = defaultdict(set)
    parts_of_pixels: dict[str, set[int]] = defaultdict(set)
    for group, part, digest in zip(groups, parts, pixel_hashes, strict=True):
        parts_of_patient[group].add(int(part))
        if digest is not None:
            parts_of_pixels[digest].add(int(part))
    overlap = sorted(p for p, s in parts_of_patient.items() if len(s) > 1)
    duplicate_groups = [s for s in parts_of_pixels.values() if len(s) > 1]
    digest_counts = Counter(d for d in pixel_hashes if d is not None)
    return {
        "patients_in_several_parts": len(overlap),
        "overlapping_patients": overlap[:50],
        "identical_images_across_parts": len(duplicate_groups),
        "identical_images_total": sum(c - 1 for c in digest_counts.values() if c > 1),
        "balance": _balance(labels, groups, parts),
        "ok": not overlap,
    }


def _balance(
    labels: Sequence[int], groups: Sequence[str], parts: Sequence[int]
) -> dict[str, dict[str, int]]:
    """Slices of each label and patients of each class (any positive slice) in each part."""
    table: dict[str, dict[str, int]] = {}
    seen: set[tuple[int, str]] = set()
    positive = patient_labels(labels, groups)
    for label, group, part in zip(labels, groups, parts, strict=True):
        name = "holdout" if part == HOLDOUT else f"fold_{part}"
        row = table.setdefault(
            name,
            {"normal_slices": 0, "stroke_slices": 0, "normal_patients": 0, "stroke_patients": 0},
        )
        row[f"{'stroke' if label else 'normal'}_slices"] += 1
        if (part, group) not in seen:
            seen.add((part, group))
            row[f"{'stroke' if positive[group] else 'normal'}_patients"] += 1
    return dict(sorted(table.items()))


def refuse_leaks(report: dict[str, object]) -> None:
    """Stop before training when any patient sits in two parts."""
    if report["patients_in_several_parts"]:
        names = ", ".join(report["overlapping_patients"][:10])
        raise LeakageError(
            f"{report['patients_in_several_parts']} patient(s) appear in more than one split "
            f"part ({names}); slices of one patient must stay together. Fix the split file "
            "or the patient ids."
        )


def patients_by_part(groups: Sequence[str], parts: Sequence[int]) -> dict[str, list[str]]:
    """For split.json: the patients of the holdout and of each fold."""
    table: dict[str, set[str]] = defaultdict(set)
    for group, part in zip(groups, parts, strict=True):
        table["holdout" if part == HOLDOUT else f"fold_{part}"].add(group)
    return {k: sorted(v) for k, v in sorted(table.items())}
