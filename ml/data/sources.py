"""Several data sources in one run: each read on its own, then pooled with their names kept.

`ml train --data A --data B` (optionally `NAME=PATH`), or `--sources FILE` (YAML: a list of
`{name, data, labels}`). With more than one source every patient id and relative path starts
with its source's name (`ctich/49`), so patients of two hospitals never collide, folds can be
stratified by source, and every report can give each source on its own.

A `--labels FILE` belongs to the source whose folder holds it (or to the only source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ml.data.dataset import Dataset, load_dataset, record_order
from ml.data.labels import LabelReport, apply_labels
from ml.errors import UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


class SourceError(UserError):
    """Sources that cannot be read together; the message says what to change."""


@dataclass(frozen=True)
class Source:
    name: str
    data: Path  # a class-folder tree or a CSV manifest
    labels: Path | None = None  # a labels file (ml.data.labels)


def parse_sources(
    data: list[str], labels: list[Path] | None = None, sources_file: Path | None = None
) -> list[Source]:
    """Sources from `--data` values (`PATH` or `NAME=PATH`) and `--labels` files, or a file."""
    if sources_file is not None:
        if data:
            raise SourceError("give --data or --sources, not both")
        return _from_file(Path(sources_file), labels or [])
    found = [_one(text) for text in data]
    _check_names(found)
    return _attach_labels(found, labels or [])


def as_sources(data: Path | str | list | tuple) -> list[Source]:
    """A folder or manifest as a list of one source; sources as they are; `--data` values."""
    if isinstance(data, Path | str):
        return [Source(default_name(Path(data)), Path(data))]
    if all(isinstance(item, Source) for item in data):
        return list(data)
    return parse_sources([str(item) for item in data])  # `--data` values


def load_sources(
    sources: list[Source], class_map: dict[str, int], patient_regex: str
) -> tuple[Dataset, list[dict[str, Any]]]:
    """One dataset of every source's slices, and what each source's labels are."""
    if not sources:
        raise SourceError("no data: pass --data (a folder or a CSV manifest)")
    pooled: Dataset | None = None
    provenance = []
    for source in sources:
        dataset = load_dataset(source.data, class_map, patient_regex)
        report = apply_labels(dataset, source.labels) if source.labels else None
        provenance.append(label_provenance(source, dataset, report))
        if len(sources) > 1:
            dataset = _namespaced(dataset, source.name)
        else:
            dataset.records = [replace(r, source=source.name) for r in dataset.records]
        pooled = dataset if pooled is None else _pool(pooled, dataset)
    assert pooled is not None
    pooled.records.sort(key=record_order)
    return pooled, provenance


def label_provenance(
    source: Source, dataset: Dataset, report: LabelReport | None
) -> dict[str, Any]:
    """Which labels a source brought: written into the bundle and onto its card."""
    records = dataset.records
    is_manifest = Path(source.data).suffix.lower() == ".csv"
    patients = {r.patient_id: r.study for r in records}
    return {
        "source": source.name,
        "data": Path(source.data).name,
        "slices": len(records),
        "patients": len(patients),
        "positive_patients": sum(patients.values()),
        "study_labels": "manifest" if is_manifest else "folders",
        "slice_labels": sum(r.slice_known for r in records),
        "lesion_slices": sum(r.slice_known and r.label for r in records),
        "masks": sum(r.mask is not None for r in records),
        "labels_file": None if report is None else {"file": report.file, "sha256": report.sha256},
        "relabelled": []
        if report is None
        else [
            {"patient": r.patient, "folder": r.folder, "used": r.used} for r in report.relabelled
        ],
        "note": None if report is None else report.describe(),
        "patient_level": len(set(patients.values())) == 2,
    }


def default_name(path: Path) -> str:
    """A source's name from its path: the folder's name, or a manifest's folder."""
    path = Path(path)
    name = path.parent.name if path.suffix.lower() == ".csv" else path.name
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:40] or "data"


def _one(text: str) -> Source:
    name, sep, rest = text.partition("=")
    if sep and NAME.fullmatch(name) and not Path(text).exists():
        return Source(name, Path(rest))
    return Source(default_name(Path(text)), Path(text))


def _from_file(path: Path, labels: list[Path]) -> list[Source]:
    if labels:
        raise SourceError("with --sources, give each source's labels in the file")
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SourceError(f"{path.name} cannot be read: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise SourceError(f"{path.name} must be a list of sources: - {{name, data, labels}}")
    found = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "data" not in entry:
            raise SourceError(f"{path.name}: source {index} needs `data` (a folder or manifest)")
        data = path.parent / str(entry["data"])
        name = str(entry.get("name") or default_name(data))
        extra = entry.get("labels")
        found.append(Source(name, data, path.parent / str(extra) if extra else None))
    _check_names(found)
    return found


def _check_names(sources: list[Source]) -> None:
    for source in sources:
        if not NAME.fullmatch(source.name):
            raise SourceError(
                f"source name {source.name!r}: use letters, digits, '-', '_' or '.' (up to 40)"
            )
    names = [s.name for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SourceError(
            f"two sources are called {', '.join(repeated)}: name them, e.g. --data site1=PATH"
        )


def _attach_labels(sources: list[Source], labels: list[Path]) -> list[Source]:
    for label_file in labels:
        owners = [
            i
            for i, s in enumerate(sources)
            if _folder(s.data) in Path(label_file).resolve().parents
        ]
        if len(sources) == 1:
            owners = [0]
        if len(owners) != 1:
            raise SourceError(
                f"{Path(label_file).name} is not inside exactly one --data folder; with several "
                "sources, use a sources file (--sources) that names each one's labels"
            )
        index = owners[0]
        if sources[index].labels is not None:
            raise SourceError(f"two labels files for source {sources[index].name}")
        sources[index] = replace(sources[index], labels=Path(label_file))
    return sources


def _folder(data: Path) -> Path:
    data = Path(data).resolve()
    return data.parent if data.suffix.lower() == ".csv" else data


def _namespaced(dataset: Dataset, name: str) -> Dataset:
    dataset.records = [
        replace(
            r, source=name, patient_id=f"{name}/{r.patient_id}", rel_path=f"{name}/{r.rel_path}"
        )
        for r in dataset.records
    ]
    dataset.ignored = [(f"{name}/{path}", why) for path, why in dataset.ignored]
    dataset.notes = [f"{name}: {note}" for note in dataset.notes]
    return dataset


def _pool(first: Dataset, second: Dataset) -> Dataset:
    return Dataset(
        root=first.root.parent if first.root != second.root else first.root,
        records=first.records + second.records,
        notes=first.notes + second.notes,
        ignored=first.ignored + second.ignored,
        grouped_by_file=first.grouped_by_file + second.grouped_by_file,
        # Pooled data is of one origin only when every source says the same.
        origin=first.origin if first.origin == second.origin else None,
    )


def describe_labels(labels_used: list[dict]) -> list[str]:
    """What the run trains on, per source, in words: the labels and where they disagree."""
    lines = []
    for used in labels_used:
        slices = f"{used['slice_labels']} of {used['slices']} slices with a slice label"
        level = "" if used["patient_level"] else "; every patient positive: slice level only"
        lines.append(
            f"source {used['source']}: study labels from {used['study_labels']}, {slices}{level}"
        )
        if used["note"]:
            lines.append(f"  {used['note']}")
    return lines
