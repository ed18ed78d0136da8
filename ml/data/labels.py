"""Better labels for a dataset: a CSV that adds slice labels or corrects study labels.

`ml train --labels FILE`: columns `path` (relative to the dataset's folder, as the records'
`rel_path`) and `bleed` (slice label) and/or `patient_bleed` (study label); other columns are
allowed and ignored. An empty `bleed` cell means "not known". Every problem is found before any
training starts, and the error names the rows: paths not in the dataset, values other than 0/1,
a path listed twice, and a patient whose rows contradict each other (two study labels, or a
bleeding slice in a patient labelled normal, or a patient labelled positive whose slices are all
labelled without a lesion).

Slices the file does not list keep their labels. Where the file's study label differs from the
folder a patient is filed under, the file's label is used and the run says so.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from ml.data.dataset import Dataset, SliceRecord, repeated_paths, slice_value
from ml.errors import UserError
from ml.hashing import sha256_file

MAX_LISTED = 10


class LabelFileError(UserError):
    """A labels file that cannot be used; the message names the rows."""


@dataclass(frozen=True)
class Relabelled:
    """A patient whose study label the file changed: filed as `folder`, trained as `used`."""

    patient: str
    folder: int
    used: int


@dataclass
class LabelReport:
    """What a labels file did to a dataset, for the run's output and the bundle's provenance."""

    file: str
    sha256: str
    slice_labels: int = 0
    study_labels: int = 0
    relabelled: list[Relabelled] = field(default_factory=list)

    def describe(self) -> str:
        text = (
            f"labels from {self.file}: {self.slice_labels} slice label(s), "
            f"{self.study_labels} study label(s)"
        )
        if not self.relabelled:
            return text + "; no study label differs from the folders"
        changes = ", ".join(
            f"{r.patient} (filed {r.folder}, used {r.used})" for r in self.relabelled
        )
        return f"{text}; the study label differs from the folders for {changes}"


def apply_labels(dataset: Dataset, path: Path) -> LabelReport:
    """Replace the records' labels with the file's; raise LabelFileError naming bad rows."""
    path = Path(path)
    rows = _read(path)
    by_path = {r.rel_path: r for r in dataset.records}
    report = LabelReport(file=path.name, sha256=sha256_file(path))
    given: dict[str, tuple[int | None, int | None, int]] = {}  # rel_path: (bleed, study, line)
    bad = []
    for line, row in rows:
        try:
            bleed = slice_value(row.get("bleed") or "", f"line {line}")
            study = slice_value(row.get("patient_bleed") or "", f"line {line}")
        except ValueError as exc:
            bad.append(str(exc))
            continue
        given[row["path"]] = (bleed, study, line)
    problems = [  # every kind at once, so that one pass mends the file
        (
            "path(s) listed more than once",
            repeated_paths([(line, row["path"]) for line, row in rows]),
        ),
        (
            "path(s) not in the dataset",
            [f"line {n}: {row['path']}" for n, row in rows if row["path"] not in by_path],
        ),
        ("label(s) other than 0 or 1", bad),
    ]
    _refuse(path, problems)
    records = [_relabel(r, given.get(r.rel_path), report) for r in dataset.records]
    _check_patients(path, records, given)
    report.relabelled = _relabelled(dataset.records, records)
    dataset.records = records
    return report


def _read(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            rows = [(line, row) for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelFileError(f"{path.name} cannot be read as CSV: {exc}") from None
    if "path" not in columns or not columns & {"bleed", "patient_bleed"}:
        raise LabelFileError(
            f"{path.name} needs a `path` column and `bleed` (slice label) and/or "
            f"`patient_bleed` (study label); it has {', '.join(sorted(columns)) or 'none'}"
        )
    for _, row in rows:
        row["path"] = (row.get("path") or "").strip()
    return rows


def _relabel(
    record: SliceRecord, given: tuple[int | None, int | None, int] | None, report: LabelReport
) -> SliceRecord:
    if given is None:
        return record
    bleed, study, _ = given
    study = record.study if study is None else study
    report.slice_labels += bleed is not None
    report.study_labels += given[1] is not None
    known = bleed is not None or record.slice_known
    return replace(
        record,
        label=bleed if bleed is not None else (record.label if record.slice_known else study),
        slice_known=known,
        study_label=study,
        folder_label=record.folder,
    )


def _check_patients(
    path: Path, records: list[SliceRecord], given: dict[str, tuple[int | None, int | None, int]]
) -> None:
    """Refuse patients whose rows disagree with each other about the study."""
    studies: dict[str, set[int]] = defaultdict(set)
    lines: dict[str, list[int]] = defaultdict(list)
    slices: dict[str, list[SliceRecord]] = defaultdict(list)
    for r in records:
        studies[r.patient_id].add(r.study)
        slices[r.patient_id].append(r)
        if r.rel_path in given:
            lines[r.patient_id].append(given[r.rel_path][2])
    problems = []
    for patient, found in sorted(studies.items()):
        where = _lines(lines[patient])
        rows = slices[patient]
        if len(found) > 1:
            problems.append(f"patient {patient}: both study labels 0 and 1 ({where})")
        elif found == {0} and any(r.slice_known and r.label for r in rows):
            problems.append(f"patient {patient}: labelled normal but a slice bleeds ({where})")
        elif found == {1} and all(r.slice_known and not r.label for r in rows):
            problems.append(f"patient {patient}: labelled positive but no slice bleeds ({where})")
    if problems:
        _refuse(path, [("patient(s) whose labels contradict each other", problems)])


def _lines(numbers: list[int]) -> str:
    if not numbers:
        return "no row of the file: from the folders"
    shown = ", ".join(map(str, sorted(numbers)[:MAX_LISTED]))
    more = len(numbers) - MAX_LISTED
    return f"lines {shown}" + (f" and {more} more" if more > 0 else "")


def _relabelled(before: list[SliceRecord], after: list[SliceRecord]) -> list[Relabelled]:
    changes: dict[str, Relabelled] = {}
    for old, new in zip(before, after, strict=True):
        if old.study != new.study:
            changes[new.patient_id] = Relabelled(new.patient_id, old.study, new.study)
    return [changes[p] for p in sorted(changes, key=_natural)]


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (10**9, text)


def _refuse(path: Path, problems: list[tuple[str, list[str]]]) -> None:
    """Raise LabelFileError listing each kind of problem found (up to MAX_LISTED rows each);
    return when there is none."""
    found = [(what, items) for what, items in problems if items]
    if not found:
        return
    parts = []
    for what, items in found:
        shown = "\n".join(f"  {item}" for item in items[:MAX_LISTED])
        more = len(items) - MAX_LISTED
        parts.append(
            f"{len(items)} {what}:\n{shown}" + (f"\n  ... and {more} more" if more > 0 else "")
        )
    raise LabelFileError(f"{path.name}: nothing was trained; " + "\n".join(parts))
