"""benchmarks/by_group.py: slice figures per group of lesion slices."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.benchmark_script import load_script


def _script():
    return load_script("by_group")


def _rows() -> list[dict[str, str]]:
    """Four patients: lesion-free slices at 0.2-0.5, epidural lesions high, subdural low."""
    rows = []
    for patient in range(4):
        for k, p in enumerate((0.2, 0.3, 0.4, 0.5)):
            rows.append(_row(patient, f"n{k}", 0, p))
        rows.append(_row(patient, "epi", 1, 0.9))  # above every lesion-free slice
        rows.append(_row(patient, "sub", 1, 0.1))  # below every one
        rows.append(_row(patient, "both", 1, 0.45))  # among them
        rows.append(_row(patient, "unnamed", 1, 0.6))
    return rows


def _row(patient: int, name: str, label: int, probability: float) -> dict[str, str]:
    return {
        "path": f"ct/P{patient}/{name}.jpg",
        "patient_id": f"ct/P{patient}",
        "label": str(label),
        "probability": str(probability),
    }


@pytest.fixture
def groups(tmp_path: Path) -> dict[str, list[str]]:
    lines = ["path,subtypes"]
    for patient in range(4):
        lines += [
            f"P{patient}/epi.jpg,Epidural",
            f"P{patient}/sub.jpg,Subdural",
            f"P{patient}/both.jpg,Epidural+Subdural",
            f"P{patient}/n0.jpg,none",
        ]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return _script().read_groups(tmp_path / "labels.csv", "subtypes")


def test_each_group_is_scored_against_every_lesion_free_slice(groups) -> None:
    table = {r["group"]: r for r in _script().group_figures(_rows(), groups, 0.55, prefix="ct/")}
    assert list(table) == ["all lesions", "Epidural", "Subdural"]
    assert table["all lesions"]["slices"] == 16  # the unnamed lesions count here only
    assert table["Epidural"]["slices"] == 8 and table["Epidural"]["patients"] == 4
    assert table["Subdural"]["slices"] == 8  # "Epidural+Subdural" counts in both
    # epidural: 0.9 beats all 16 lesion-free slices, 0.45 beats 12 of 16
    assert table["Epidural"]["roc_auc"] == pytest.approx((16 + 12) / 32)
    # subdural: 0.1 beats none, 0.45 beats 12 of 16
    assert table["Subdural"]["roc_auc"] == pytest.approx(12 / 32)
    assert table["Epidural"]["flagged"] == 4 and table["Subdural"]["flagged"] == 0
    assert table["all lesions"]["flagged"] == 8  # 0.9 and 0.6 of each patient
    low, high = table["Epidural"]["roc_auc_ci95"]
    assert low <= table["Epidural"]["roc_auc"] <= high


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,bleed\na.jpg,1\n")
    with pytest.raises(SystemExit, match="no column 'subtypes'"):
        _script().read_groups(tmp_path / "labels.csv", "subtypes")


def test_lesions_are_cut_into_thirds_by_area(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    lines = ["path,label,mask"]
    for k, side in enumerate((0, 4, 6, 10, 14, 20)):
        mask = np.zeros((40, 40), np.uint8)
        mask[5 : 5 + side, 5 : 5 + side] = 255  # a filled square of side**2 pixels
        Image.fromarray(mask).save(tmp_path / f"m{k}.png")
        lines.append(f"s{k}.jpg,{int(side > 0)},m{k}.png")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    sizes = _script().read_sizes(tmp_path / "labels.csv")
    assert "s0.jpg" not in sizes  # no lesion, no group
    assert [sizes[f"s{k}.jpg"][0][0] for k in range(1, 6)] == ["1", "1", "2", "3", "3"]
