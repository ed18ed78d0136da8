"""Find the slices of a dataset, their labels and their patients.

A dataset is either a folder with one subfolder per class, as users download them
(`Normal/`, `Stroke/`, or `Normal/`, `Bleeding/`, `Ischemia/` with a binary class map; images
may sit deeper, e.g. `Bleeding/PNG/`), or a CSV manifest with a `path` column and labels.

Labels come at two levels. A slice label says whether this slice shows a lesion; a study label
says whether the patient has one. A folder gives the study label only (every slice of a patient
in `Stroke/` is filed as stroke, lesion or not). A manifest may give either or both: `bleed` is
the slice label and `patient_bleed` the study label; `label` is the study label, except in a
manifest that also has `patient_bleed` and no `bleed` (as PHE-SICH's labels.csv), where `label`
is read as the slice label. A `mask` column names a lesion mask per slice. A separate labels file
(ml.data.labels) can add slice labels to a folder or correct its study labels.

Each record's `label` is what it is trained and scored on: its slice label where known, else its
study label.

Patients matter more than slices: slices of one patient are near copies of each other, so every
split is made by patient. The patient id comes from the manifest or from the file name by a
regex; a file without one becomes its own group, and the report says so, because such a split
can leak.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ml.config import ORIGIN_FILE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}
LABEL_NAMES = {0: "Normal", 1: "Stroke"}


@dataclass(frozen=True)
class SliceRecord:
    path: Path  # absolute path of the file
    rel_path: str  # path relative to the dataset root (its source's name first, with several)
    label: int  # what it is trained and scored on: the slice label if known, else the study's
    class_name: str  # folder or manifest label it came from
    patient_id: str
    slice_number: int | None = None
    study_label: int | None = None  # the patient's label; None: same as `label` (folder data)
    slice_known: bool = False  # `label` is a real slice label, not the study's
    folder_label: int | None = None  # what the folder or manifest said; None: same as study
    source: str = ""  # which data source (several may train together)
    mask: Path | None = None  # lesion mask, where the source has one

    @property
    def study(self) -> int:
        return self.label if self.study_label is None else self.study_label

    @property
    def folder(self) -> int:
        return self.study if self.folder_label is None else self.folder_label


@dataclass
class Dataset:
    root: Path
    records: list[SliceRecord]
    notes: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (rel_path, reason)
    grouped_by_file: int = 0  # records without a patient id
    origin: str | None = None  # what the folder's origin.json says, e.g. "synthetic phantoms"

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def patients(self) -> list[str]:
        return [r.patient_id for r in self.records]

    def summary(self) -> dict[str, object]:
        """Slices per label (their slice label where known) and patients per study label."""
        slices = Counter(LABEL_NAMES[r.label] for r in self.records)
        patients: dict[str, set[str]] = {name: set() for name in LABEL_NAMES.values()}
        for r in self.records:
            patients[LABEL_NAMES[r.study]].add(r.patient_id)
        return {
            "slices": dict(slices),
            "patients": {k: len(v) for k, v in patients.items()},
            "total_slices": len(self.records),
            "total_patients": len({r.patient_id for r in self.records}),
            "origin": self.origin,  # None: the folder does not say
        }


def load_dataset(source: Path, class_map: dict[str, int], patient_regex: str) -> Dataset:
    """A class-folder tree or a CSV manifest, read into records sorted by class, patient, slice."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        dataset = _from_manifest(source, class_map, patient_regex)
    elif source.is_dir():
        dataset = _from_folders(source, class_map, patient_regex)
    else:
        raise FileNotFoundError(f"{source} is neither a dataset folder nor a .csv manifest")
    if not dataset.records:
        raise ValueError(f"no image files found under {source}")
    if len({r.label for r in dataset.records}) < 2:
        raise ValueError("the dataset needs slices of both classes (normal and stroke)")
    dataset.records.sort(key=record_order)
    dataset.origin = _origin(dataset)
    _add_notes(dataset)
    return dataset


def _origin(dataset: Dataset) -> str | None:
    """The origin declared by an `origin.json` in the dataset's folder, or in the folder that
    holds every file of a manifest (so a manifest over phantoms still says what they are)."""
    folders = [dataset.root]
    common = Path(os.path.commonpath([r.path.parent for r in dataset.records]))
    if common != dataset.root:
        folders.append(common)
    for folder in folders:
        path = folder / ORIGIN_FILE
        if path.is_file():
            try:
                origin = json.loads(path.read_text(encoding="utf-8")).get("origin")
            except (OSError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path} cannot be read as JSON with an 'origin': {exc}") from None
            if isinstance(origin, str) and origin.strip():
                return origin.strip()
    return None


def patient_from_name(name: str, pattern: re.Pattern[str]) -> tuple[str | None, int | None]:
    """(patient id, slice number) from a file name, None where the regex finds none."""
    match = pattern.search(name)
    if not match or not match.groupdict().get("patient"):
        return None, None
    number = match.groupdict().get("slice")
    return match.group("patient"), int(number) if number and number.isdigit() else None


def compile_patient_regex(text: str) -> re.Pattern[str]:
    pattern = re.compile(text)
    if "patient" not in pattern.groupindex:
        raise ValueError("patient_regex needs a named group (?P<patient>...)")
    return pattern


def _from_folders(root: Path, class_map: dict[str, int], patient_regex: str) -> Dataset:
    pattern = compile_patient_regex(patient_regex)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in class_map]
    if unknown:
        raise ValueError(
            f"class folder(s) {', '.join(unknown)} are not in the class map "
            f"({', '.join(f'{k}={v}' for k, v in class_map.items())}); "
            "pass --class-map, e.g. --class-map Normal=0,Bleeding=1,Ischemia=1"
        )
    if not folders:
        raise ValueError(f"{root} has no class subfolders (e.g. Normal/, Stroke/)")
    dataset = Dataset(root=root, records=[])
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                dataset.ignored.append((rel, f"not an image file type ({path.suffix})"))
                continue
            dataset.records.append(
                _record(path, rel, class_map[folder.name], folder.name, None, pattern, dataset)
            )
    return dataset


def _from_manifest(manifest: Path, class_map: dict[str, int], patient_regex: str) -> Dataset:
    pattern = compile_patient_regex(patient_regex)
    root = manifest.parent
    dataset = Dataset(root=root, records=[])
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        rows = list(enumerate(reader, start=2))
    slice_column, study_column = manifest_columns(columns, manifest.name)
    if slice_column == "label":
        dataset.notes.append(
            f"{manifest.name}: `label` read as the slice label (the manifest also has "
            "patient_bleed, the study label)"
        )
    check_unique_paths([(line, row["path"]) for line, row in rows], manifest.name)
    for line, row in rows:
        path = (root / row["path"]).resolve()
        if not path.is_file():
            dataset.ignored.append((row["path"], "listed in the manifest but missing"))
            continue
        where = f"{manifest.name} line {line}"
        bleed = slice_value(row.get(slice_column) or "", where) if slice_column else None
        study_text = (row.get(study_column) or "").strip() if study_column else ""
        study = _parse_label(study_text, class_map, where) if study_column else None
        given = (row.get("patient_id") or "").strip() or None
        record = _record(path, row["path"], study, study_text, given, pattern, dataset)
        number = (row.get("slice") or "").strip()
        mask = (row.get("mask") or "").strip()
        dataset.records.append(
            replace(
                record,
                label=bleed if bleed is not None else record.label,
                slice_known=bleed is not None,
                study_label=study,
                slice_number=int(number) if number.isdigit() else record.slice_number,
                mask=(root / mask).resolve() if mask else None,
            )
        )
    if study_column is None:  # slice labels only: a patient is positive if a slice is
        dataset.records = with_study_from_slices(dataset.records)
    return dataset


def manifest_columns(columns: set[str], name: str) -> tuple[str | None, str | None]:
    """(slice label column, study label column) of a manifest; either may be None."""
    if "path" not in columns or not columns & {"label", "bleed", "patient_bleed"}:
        raise ValueError(
            f"manifest {name} needs a `path` column and labels: `label` (study), `bleed` "
            "(slice) and/or `patient_bleed` (study)"
        )
    if "bleed" in columns:
        slice_column = "bleed"
    elif {"label", "patient_bleed"} <= columns:
        slice_column = "label"
    else:
        slice_column = None
    if "patient_bleed" in columns:
        return slice_column, "patient_bleed"
    return slice_column, "label" if "label" in columns and slice_column != "label" else None


def slice_value(text: str, where: str) -> int | None:
    """A slice label: 0 or 1, or None when the cell is empty (not known)."""
    text = text.strip()
    if text == "":
        return None
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"{where}: slice label {text!r} must be 0, 1 or empty (not known)")


def repeated_paths(rows: list[tuple[int, str]]) -> list[str]:
    """Each path a file lists more than once, with its lines: 'a.png (lines 3, 7)'."""
    lines: dict[str, list[int]] = {}
    for line, path in rows:
        lines.setdefault(path.strip(), []).append(line)
    return [
        f"{path} (lines {', '.join(map(str, found))})"
        for path, found in lines.items()
        if len(found) > 1
    ]


def check_unique_paths(rows: list[tuple[int, str]], name: str) -> None:
    """Refuse a file that lists a path twice, naming the lines."""
    repeated = repeated_paths(rows)
    if repeated:
        listing = "; ".join(repeated[:10])
        raise ValueError(f"{name}: {len(repeated)} path(s) listed more than once: {listing}")


def with_study_from_slices(records: list[SliceRecord]) -> list[SliceRecord]:
    """Each record's study label from its patient's slice labels (any lesion: positive)."""
    positive: dict[str, int] = {}
    for r in records:
        if r.slice_known:
            positive[r.patient_id] = max(positive.get(r.patient_id, 0), r.label)
    return [
        replace(
            r,
            study_label=positive.get(r.patient_id, 0),
            label=r.label if r.slice_known else positive.get(r.patient_id, 0),
        )
        for r in records
    ]


def _record(
    path: Path,
    rel: str,
    label: int | None,
    class_name: str,
    patient_id: str | None,
    pattern: re.Pattern[str],
    dataset: Dataset,
) -> SliceRecord:
    found, number = patient_from_name(path.name, pattern)
    if patient_id is None:
        patient_id = found
    if patient_id is None:
        dataset.grouped_by_file += 1
        patient_id = f"file:{rel}"
    return SliceRecord(path, rel, 0 if label is None else label, class_name, patient_id, number)


def _parse_label(text: str, class_map: dict[str, int], where: str) -> int:
    if text in class_map:
        return class_map[text]
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"{where}: label {text!r} is neither 0/1 nor one of {', '.join(class_map)}")


def slice_order(r: SliceRecord) -> tuple[int, list[Any]]:
    """Position of a slice among its patient's: the slice number, else the natural name order."""
    return (r.slice_number or 0, natural_key(r.rel_path))


def natural_key(name: str) -> list[Any]:
    """`1 (9).png` before `1 (10).png`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def record_order(r: SliceRecord) -> tuple[str, int, str, int, str]:
    return (r.source, r.study, r.patient_id, r.slice_number or 0, r.rel_path)


def _add_notes(dataset: Dataset) -> None:
    if dataset.grouped_by_file:
        dataset.notes.append(
            f"{dataset.grouped_by_file} file(s) had no patient id, so each became its own group. "
            "If slices of one patient are among them, the split is not by patient and the "
            "cross-validation figures will be too good: add a patient_id column or fix the "
            "patient regex."
        )
    labels_per_patient: dict[str, set[int]] = {}
    for r in dataset.records:
        labels_per_patient.setdefault(r.patient_id, set()).add(r.study)
    mixed = sorted(p for p, labels in labels_per_patient.items() if len(labels) > 1)
    if mixed:
        dataset.notes.append(
            f"{len(mixed)} patient(s) have slices filed under both classes: {', '.join(mixed[:10])}"
        )
