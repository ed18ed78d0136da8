"""Where a bundle's training data came from: `ml synth` says so, the trainer records it, and
`Bundle.synthetic_only` (read by the web app and the API) answers from the record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ml.bundle import Bundle, load_bundle
from ml.config import DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX, ORIGIN_FILE, SYNTHETIC_ORIGIN
from ml.data.dataset import load_dataset
from ml.data.synth import write_dataset


def _bundle(data: dict, notes: list[str]) -> Bundle:
    manifest = {"data": data, "notes": notes}
    return Bundle(path=Path("x"), id="0" * 16, config={}, metrics={}, manifest=manifest, audit={})


def test_ml_synth_says_its_images_are_synthetic(tmp_path: Path) -> None:
    write_dataset(tmp_path, patients=2, slices_per_patient=1, size=32, fmt="both")
    for root in ("png", "dicom"):
        document = json.loads((tmp_path / root / ORIGIN_FILE).read_text())
        assert document["origin"] == SYNTHETIC_ORIGIN and document["real_ct"] is False


def test_the_dataset_reads_the_origin_of_a_folder_or_of_a_manifest(tmp_path: Path) -> None:
    write_dataset(tmp_path / "phantoms", patients=2, slices_per_patient=2, size=32)
    folder = load_dataset(tmp_path / "phantoms", DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
    assert folder.origin == SYNTHETIC_ORIGIN
    assert folder.summary()["origin"] == SYNTHETIC_ORIGIN
    manifest = tmp_path / "lists" / "phantoms.csv"
    manifest.parent.mkdir()
    rows = [f"../phantoms/{r.rel_path},{r.label}" for r in folder.records]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    listed = load_dataset(manifest, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
    assert listed.origin == SYNTHETIC_ORIGIN


def test_a_folder_that_says_nothing_has_no_origin(tmp_path: Path) -> None:
    for rel in ("Normal/1 (1).png", "Stroke/2 (1).png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), 80, np.uint8)).save(tmp_path / rel)
    dataset = load_dataset(tmp_path, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
    assert dataset.origin is None and dataset.summary()["origin"] is None


def test_synthetic_only_reads_the_recorded_origin_first() -> None:
    assert _bundle({"origin": SYNTHETIC_ORIGIN}, []).synthetic_only
    assert not _bundle({"origin": "real CT, hospital A"}, ["synthetic phantoms"]).synthetic_only
    assert not _bundle({"origin": None}, []).synthetic_only


def test_bundles_without_a_recorded_origin_fall_back_on_their_note() -> None:
    """What `make demo-build` wrote before the trainer recorded the origin."""
    note = "Trained on synthetic phantoms only: it knows nothing about real CT scans."
    assert _bundle({}, [note]).synthetic_only
    assert not _bundle({}, ["Trained on CT-ICH"]).synthetic_only


def test_a_bundle_trained_on_phantoms_is_synthetic_only(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.manifest["data"]["origin"] == SYNTHETIC_ORIGIN
    assert bundle.synthetic_only and bundle.card()["synthetic_only"] is True
    assert "not real CT" in (tiny_bundle / "model_card.md").read_text()
