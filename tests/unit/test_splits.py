"""ml.data.splits and fold balancing: no patient on two sides, balancing only inside training
parts."""

from __future__ import annotations

import numpy as np
import pytest

from ml.data.splits import HOLDOUT, LeakageError, assign_parts, audit, patient_labels, refuse_leaks
from ml.train.loop import balanced_rows


def _cohort(seed: int, patients: int = 40) -> tuple[list[int], list[str]]:
    """Patients with 5-30 slices each, about a third of them stroke."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for p in range(patients):
        label = int(rng.random() < 0.35)
        for _ in range(int(rng.integers(5, 30))):
            labels.append(label)
            groups.append(f"p{p}")
    return labels, groups


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("holdout_frac", [0.0, 0.15])
def test_no_patient_in_two_parts(seed: int, holdout_frac: float) -> None:
    labels, groups = _cohort(seed)
    parts = assign_parts(labels, groups, folds=5, holdout_frac=holdout_frac, seed=seed)
    parts_of = {}
    for group, part in zip(groups, parts, strict=True):
        parts_of.setdefault(group, set()).add(int(part))
    assert all(len(s) == 1 for s in parts_of.values())
    assert set(parts.tolist()) == set(range(1, 6)) | ({HOLDOUT} if holdout_frac else set())
    report = audit(labels, groups, parts, [None] * len(labels))
    assert report["patients_in_several_parts"] == 0 and report["ok"]


def test_holdout_is_drawn_by_patient_and_per_class() -> None:
    labels, groups = _cohort(3, patients=60)
    parts = assign_parts(labels, groups, folds=5, holdout_frac=0.2, seed=3)
    held = {g for g, p in zip(groups, parts, strict=True) if p == HOLDOUT}
    by_patient = patient_labels(labels, groups)
    for label in (0, 1):
        total = sum(1 for y in by_patient.values() if y == label)
        chosen = sum(1 for g in held if by_patient[g] == label)
        assert chosen == max(1, round(0.2 * total))


def test_each_fold_gets_both_classes() -> None:
    labels, groups = _cohort(1)
    parts = assign_parts(labels, groups, folds=5, holdout_frac=0.0, seed=1)
    report = audit(labels, groups, parts, [None] * len(labels))
    for row in report["balance"].values():
        assert row["normal_patients"] > 0 and row["stroke_patients"] > 0


def test_split_depends_on_seed_and_repeats_with_it() -> None:
    labels, groups = _cohort(0)
    a = assign_parts(labels, groups, folds=5, holdout_frac=0.1, seed=7)
    b = assign_parts(labels, groups, folds=5, holdout_frac=0.1, seed=7)
    c = assign_parts(labels, groups, folds=5, holdout_frac=0.1, seed=8)
    assert (a == b).all()
    assert not (a == c).all()


def test_too_few_patients_for_the_folds() -> None:
    with pytest.raises(ValueError, match="fewer folds"):
        assign_parts([0, 1, 0], ["a", "b", "c"], folds=5, holdout_frac=0.0, seed=0)


def test_audit_finds_a_patient_split_across_parts_and_training_refuses() -> None:
    labels = [0, 0, 1, 1, 0, 1]
    groups = ["a", "a", "b", "b", "c", "d"]
    parts = [1, 2, 1, 1, 2, 2]  # patient a sits in folds 1 and 2
    report = audit(labels, groups, parts, [None] * 6)
    assert report["patients_in_several_parts"] == 1
    assert report["overlapping_patients"] == ["a"]
    assert not report["ok"]
    with pytest.raises(LeakageError, match="1 patient"):
        refuse_leaks(report)


def test_audit_counts_identical_pixels_across_parts() -> None:
    labels = [0, 0, 1, 1]
    groups = ["a", "b", "c", "d"]
    parts = [1, 2, 1, 2]
    hashes = ["same", "same", "x", None]  # one image appears in fold 1 and in fold 2
    report = audit(labels, groups, parts, hashes)
    assert report["identical_images_across_parts"] == 1
    assert report["identical_images_total"] == 1
    assert report["ok"]  # reported, not refused: different patients may share a blank slice


@pytest.mark.parametrize("how", ["oversample", "sampler", "none"])
def test_balancing_uses_only_the_rows_it_is_given(how: str) -> None:
    labels = np.array([0] * 30 + [1] * 10 + [1] * 50)  # rows 40..89 are another fold's
    train_rows = list(range(40))
    rows, weights = balanced_rows(train_rows, labels, how, np.random.default_rng(0))
    assert set(rows) <= set(train_rows)
    if how == "oversample":
        classes = labels[rows]
        assert (classes == 0).sum() == (classes == 1).sum() == 30
    if how == "sampler":
        assert weights is not None
        w = weights.numpy()
        assert np.isclose(w[labels[rows] == 0].sum(), w[labels[rows] == 1].sum())
