"""Labels at two levels and several sources: manifests, labels files, namespaced patients, folds
stratified by source, and bad label files refused before any training, naming the rows."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from ml.config import DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX
from ml.data import splits
from ml.data.dataset import load_dataset
from ml.data.labels import LabelFileError, apply_labels
from ml.data.sources import Source, SourceError, load_sources, parse_sources
from ml.data.synth import write_dataset
from ml.data.synth_labels import write_lesion_manifest, write_slice_labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six phantom patients (three with a lesion on some slices) and their slice labels."""
    root = tmp_path_factory.mktemp("folder") / "ctich"
    write_dataset(root, patients=6, slices_per_patient=4, size=48, seed=3)
    write_slice_labels(root)
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second site laid out as PHE-SICH: every patient positive, masks, `label` per slice."""
    return write_lesion_manifest(
        tmp_path_factory.mktemp("site") / "phe", patients=5, slices_per_patient=4, size=48
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _load(data: Path):
    return load_dataset(data, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)


def test_a_labels_file_gives_slice_labels_and_keeps_the_study_label(folder: Path) -> None:
    dataset = _load(folder)
    assert all(r.label == r.study for r in dataset.records)  # folders: the patient's label
    report = apply_labels(dataset, folder / "slice_labels.csv")
    truth = {row["path"]: int(row["bleed"]) for row in _rows(folder / "slice_labels.csv")}
    assert {r.rel_path: r.label for r in dataset.records} == truth
    assert all(r.slice_known for r in dataset.records)
    stroke_slices = [r for r in dataset.records if r.class_name == "Stroke"]
    assert all(r.study == 1 for r in stroke_slices) and any(r.label == 0 for r in stroke_slices)
    assert report.slice_labels == len(truth) and report.relabelled == []


def test_a_study_label_that_differs_from_the_folder_is_used_and_named(
    folder: Path, tmp_path: Path
) -> None:
    """As CT-ICH's patients 49-53: filed under Normal/, bleeding on a slice."""
    rows = _rows(folder / "slice_labels.csv")
    for row in rows:
        if row["patient_id"] == "1":
            row["patient_bleed"] = "1"
            row["bleed"] = "1" if row["slice"] == "2" else "0"
    dataset = _load(folder)
    report = apply_labels(dataset, _write(tmp_path / "fixed.csv", rows))
    [change] = report.relabelled
    assert (change.patient, change.folder, change.used) == ("1", 0, 1)
    assert "1 (filed 0, used 1)" in report.describe()
    patient = [r for r in dataset.records if r.patient_id == "1"]
    assert {r.study for r in patient} == {1} and {r.folder for r in patient} == {0}


def test_slices_a_labels_file_does_not_list_keep_the_folder_label(
    folder: Path, tmp_path: Path
) -> None:
    rows = [r for r in _rows(folder / "slice_labels.csv") if r["patient_id"] != "6"]
    dataset = _load(folder)
    apply_labels(dataset, _write(tmp_path / "part.csv", rows))
    unlisted = [r for r in dataset.records if r.patient_id == "6"]
    assert unlisted and all(not r.slice_known and r.label == r.study == 1 for r in unlisted)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda rows: rows.append({**rows[0], "path": "Normal/99 (1).png"}), "not in the dataset"),
        (lambda rows: rows[3].update(bleed="2"), "other than 0 or 1"),
        (lambda rows: rows.append(dict(rows[5])), "more than once"),
        (lambda rows: rows[0].update(bleed="1"), "labelled normal but a slice bleeds"),
        (lambda rows: rows[1].update(patient_bleed="1"), "both study labels"),
    ],
)
def test_bad_label_files_are_refused_naming_the_rows(
    folder: Path, tmp_path: Path, change, words: str
) -> None:
    rows = _rows(folder / "slice_labels.csv")
    change(rows)
    with pytest.raises(LabelFileError, match=words) as refused:
        apply_labels(_load(folder), _write(tmp_path / "bad.csv", rows))
    assert "line" in str(refused.value) and "nothing was trained" in str(refused.value)


def test_every_kind_of_bad_row_is_named_at_once(folder: Path, tmp_path: Path) -> None:
    rows = _rows(folder / "slice_labels.csv")
    rows.append({**rows[0], "path": "Normal/99 (1).png"})
    rows[3].update(bleed="2")
    rows.append(dict(rows[5]))
    with pytest.raises(LabelFileError) as refused:
        apply_labels(_load(folder), _write(tmp_path / "bad.csv", rows))
    text = str(refused.value)
    for words in ("not in the dataset", "other than 0 or 1", "more than once"):
        assert words in text  # one pass over the file mends all three


def test_a_positive_patient_without_a_bleeding_slice_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    rows = _rows(folder / "slice_labels.csv")
    for row in rows:
        if row["patient_id"] == "5":
            row["bleed"] = "0"
    with pytest.raises(LabelFileError, match="patient 5: labelled positive but no slice bleeds"):
        apply_labels(_load(folder), _write(tmp_path / "bad.csv", rows))


def test_a_site_manifest_reads_label_as_the_slice_label(site: Path) -> None:
    dataset = _load(site)
    rows = {row["path"]: row for row in _rows(site)}
    assert all(r.label == int(rows[r.rel_path]["label"]) for r in dataset.records)
    assert all(r.study == 1 and r.slice_known and r.mask.is_file() for r in dataset.records)
    assert any("read as the slice label" in note for note in dataset.notes)


def test_a_manifest_with_bleed_and_patient_bleed_columns(folder: Path, tmp_path: Path) -> None:
    rows = _rows(folder / "slice_labels.csv")
    for row in rows:
        row["path"] = str(folder / row["path"])
        if row["patient_id"] == "6":
            row["bleed"] = ""  # not known: the slice takes its patient's label
    dataset = _load(_write(tmp_path / "manifest.csv", rows))
    unknown = [r for r in dataset.records if r.patient_id == "6"]
    assert all(not r.slice_known and r.label == 1 for r in unknown)
    known = [r for r in dataset.records if r.patient_id == "4"]
    assert all(r.slice_known for r in known) and {r.label for r in known} == {0, 1}


def test_two_sources_are_namespaced_and_say_their_labels(folder: Path, site: Path) -> None:
    sources = parse_sources([str(folder), f"phe={site}"], [folder / "slice_labels.csv"])
    assert [s.name for s in sources] == ["ctich", "phe"]
    assert sources[0].labels == folder / "slice_labels.csv" and sources[1].labels is None
    dataset, used = load_sources(sources, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
    assert {r.patient_id.split("/")[0] for r in dataset.records} == {"ctich", "phe"}
    assert {r.rel_path.split("/")[0] for r in dataset.records} == {"ctich", "phe"}
    assert len({r.patient_id for r in dataset.records}) == 6 + 5  # "1" exists in both sets
    by_name = {u["source"]: u for u in used}
    assert by_name["ctich"]["patient_level"] and not by_name["phe"]["patient_level"]
    assert by_name["ctich"]["labels_file"]["file"] == "slice_labels.csv"
    assert by_name["phe"]["masks"] == 20


def test_sources_that_cannot_be_read_together_are_refused(folder: Path, site: Path) -> None:
    with pytest.raises(SourceError, match="two sources are called ctich"):
        parse_sources([str(folder), f"ctich={site}"])
    with pytest.raises(SourceError, match="not inside exactly one --data folder"):
        parse_sources([str(folder), str(site)], [site.parent.parent / "elsewhere.csv"])


def test_a_sources_file(folder: Path, site: Path, tmp_path: Path) -> None:
    listing = tmp_path / "sources.yaml"
    listing.write_text(
        f"- {{name: a, data: {folder}, labels: {folder / 'slice_labels.csv'}}}\n"
        f"- {{name: b, data: {site}}}\n"
    )
    assert parse_sources([], None, listing) == [
        Source("a", folder, folder / "slice_labels.csv"),
        Source("b", site),
    ]


def test_folds_are_stratified_by_source_and_label() -> None:
    """Ten patients of each (source, label) stratum: every fold gets two of each."""
    labels, groups, strata = [], [], []
    for source in ("a", "b"):
        for label in (0, 1):
            for patient in range(10):
                for _ in range(3):
                    labels.append(label)
                    groups.append(f"{source}/{label}/{patient}")
                    strata.append(source)
    parts = splits.assign_parts(labels, groups, folds=5, holdout_frac=0.0, seed=0, strata=strata)
    count: dict[tuple[int, str, int], set[str]] = defaultdict(set)
    for part, group, source, label in zip(parts, groups, strata, labels, strict=True):
        count[(int(part), source, label)].add(group)
    assert {len(v) for v in count.values()} == {2} and len(count) == 5 * 4
    assert len(np.unique(parts)) == 5
