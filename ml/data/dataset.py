"""Find the slices of a dataset, their labels and their patients.

A dataset is either a folder with one subfolder per class, as users download them
(`Normal/`, `Stroke/`, or `Normal/`, `Bleeding/`, `Ischemia/` with a binary class map; images
may sit deeper, e.g. `Bleeding/PNG/`), or a CSV manifest with columns `path,label[,patient_id]`.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.config import ORIGIN_FILE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}
LABEL_NAMES = {0: "Normal", 1: "Stroke"}


@dataclass(frozen=True)
class SliceRecord:
    path: Path  # absolute path of the file
    rel_path: str  # path relative to the dataset root, as stored in bundles
    label: int  # 0 normal, 1 stroke
    class_name: str  # folder or manifest label it came from
    patient_id: str
    slice_number: int | None = None


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
        """Counts per class of slices and of patients."""
        slices = Counter(LABEL_NAMES[r.label] for r in self.records)
        patients: dict[str, set[str]] = {name: set() for name in LABEL_NAMES.values()}
        for r in self.records:
            patients[LABEL_NAMES[r.label]].add(r.patient_id)
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
    dataset.records.sort(key=_order_key)
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
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"manifest {manifest.name} lacks column(s): {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            label_text = (row.get("label") or "").strip()
            label = _parse_label(label_text, class_map, manifest.name, line)
            path = (root / row["path"]).resolve()
            if not path.is_file():
                dataset.ignored.append((row["path"], "listed in the manifest but missing"))
                continue
            given = (row.get("patient_id") or "").strip() or None
            dataset.records.append(
                _record(path, row["path"], label, label_text, given, pattern, dataset)
            )
    return dataset


def _record(
    path: Path,
    rel: str,
    label: int,
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
    return SliceRecord(path, rel, label, class_name, patient_id, number)


def _parse_label(text: str, class_map: dict[str, int], manifest: str, line: int) -> int:
    if text in class_map:
        return class_map[text]
    if text in ("0", "1"):
        return int(text)
    raise ValueError(
        f"{manifest} line {line}: label {text!r} is neither 0/1 nor one of {', '.join(class_map)}"
    )


def slice_order(r: SliceRecord) -> tuple[int, list[Any]]:
    """Position of a slice among its patient's: the slice number, else the natural name order."""
    return (r.slice_number or 0, natural_key(r.rel_path))


def natural_key(name: str) -> list[Any]:
    """`1 (9).png` before `1 (10).png`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _order_key(r: SliceRecord) -> tuple[int, str, int, str]:
    return (r.label, r.patient_id, r.slice_number or 0, r.rel_path)


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
        labels_per_patient.setdefault(r.patient_id, set()).add(r.label)
    mixed = sorted(p for p, labels in labels_per_patient.items() if len(labels) > 1)
    if mixed:
        dataset.notes.append(
            f"{len(mixed)} patient(s) have slices in both classes: {', '.join(mixed[:10])}"
        )
