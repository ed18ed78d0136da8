"""Phantom data sets with labels at both levels, laid out as the real sources are.

- `write_slice_labels(root)`: a `slice_labels.csv` beside a class-folder phantom set (as CT-ICH's
  PhysioNet labels): `path, patient_id, slice, bleed, patient_bleed`, from its `lesions.json`.
- `write_lesion_manifest(out, ...)`: a second site as PHE-SICH is laid out: every patient has a
  lesion, `images/`, one-bit `masks/` and `labels.csv` (`path, label, patient_id, slice, mask,
  patient_bleed`, where `label` is the slice label).

Tests and the demo use them; nothing here is real data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ml.data.dataset import natural_key
from ml.data.synth import (
    BRAIN_WINDOW,
    CLASS_NAMES,
    phantom_patient,
    window_to_uint8,
)


def write_slice_labels(root: Path) -> Path:
    """`root/slice_labels.csv` for a phantom set written by `write_dataset` (PNG or DICOM)."""
    root = Path(root)
    lesions = json.loads((root / "lesions.json").read_text())["lesions"]
    bleeding = {item["path"] for item in lesions}
    files = sorted(
        (p.relative_to(root).as_posix() for name in CLASS_NAMES for p in (root / name).glob("*")),
        key=natural_key,
    )
    patient_of = {path: path.split("/")[1].split(" ")[0] for path in files}
    positive = {patient_of[path] for path in bleeding}
    target = root / "slice_labels.csv"
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "patient_id", "slice", "bleed", "patient_bleed"])
        for path in files:
            number = path.split("(")[-1].split(")")[0]
            patient = patient_of[path]
            writer.writerow(
                [path, patient, number, int(path in bleeding), int(patient in positive)]
            )
    return target


def write_lesion_manifest(
    out: Path, *, patients: int, slices_per_patient: int = 8, size: int = 64, seed: int = 0
) -> Path:
    """A phantom site whose every patient has a lesion; returns its `labels.csv`."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    rows = []
    for number in range(1, patients + 1):
        rng = np.random.default_rng([seed, 7919, number])
        stack = phantom_patient(rng, n_slices=slices_per_patient, size=size, stroke=True)
        for k, phantom in enumerate(stack):
            stem = f"{number:04d}_{k:02d}"
            pixels = window_to_uint8(phantom.hu, *BRAIN_WINDOW)
            Image.fromarray(pixels).save(out / "images" / f"{stem}.jpg", quality=95)
            Image.fromarray(phantom.lesion_mask).convert("1").save(out / "masks" / f"{stem}.png")
            lesion = int(phantom.lesion_mask.any())
            rows.append([f"images/{stem}.jpg", lesion, f"{number:04d}", k, f"masks/{stem}.png", 1])
    target = out / "labels.csv"
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id", "slice", "mask", "patient_bleed"])
        writer.writerows(rows)
    return target
