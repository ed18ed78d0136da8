"""ml.data.synth: phantom anatomy and lesions, windowing, DICOM writing and the data-set layout."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from ml.data.synth import (
    BRAIN_WINDOW,
    PhantomSlice,
    _patient_rng,
    phantom_patient,
    window_to_uint8,
    write_ct_dicom,
    write_dataset,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
DATASET_SEED = 3
DATASET_PATIENTS = 5  # 3 normal (1..3), 2 stroke (4..5)
DATASET_SLICES = 6
DATASET_SIZE = 96


def _stack(seed: int, *, stroke: bool, n_slices: int = 6, size: int = 128) -> list[PhantomSlice]:
    return phantom_patient(np.random.default_rng(seed), n_slices=n_slices, size=size, stroke=stroke)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _skull_span(row: np.ndarray) -> tuple[int, int]:
    """Columns of the inner edges of the skull on a row through the head."""
    bone = np.flatnonzero(row > 500)
    gaps = np.flatnonzero(np.diff(bone) > 1)
    assert len(gaps) == 1, "a row through the head should cross the skull twice"
    return int(bone[gaps[0]]), int(bone[gaps[0] + 1])


@pytest.fixture(scope="module")
def png_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "png"
    summary = write_dataset(
        root,
        patients=DATASET_PATIENTS,
        slices_per_patient=DATASET_SLICES,
        size=DATASET_SIZE,
        fmt="png",
        seed=DATASET_SEED,
    )
    return root, summary


# --- data set ---------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    for name in ("first", "second"):
        write_dataset(
            tmp_path / name, patients=4, slices_per_patient=4, size=64, fmt="both", seed=11
        )
    first, second = _file_bytes(tmp_path / "first"), _file_bytes(tmp_path / "second")
    assert sorted(first) == sorted(second)
    assert {Path(name).suffix for name in first} == {".png", ".dcm", ".json"}
    changed = [name for name in first if first[name] != second[name]]
    assert changed == []


def test_another_seed_gives_other_images(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_dataset(tmp_path / str(seed), patients=2, slices_per_patient=2, size=64, seed=seed)
    name = "Normal/1 (1).png"
    assert (tmp_path / "0" / name).read_bytes() != (tmp_path / "1" / name).read_bytes()


def test_png_layout_names_and_numbering(png_dataset: tuple[Path, dict]) -> None:
    root, summary = png_dataset
    names = {
        folder: sorted(p.name for p in (root / folder).iterdir()) for folder in ("Normal", "Stroke")
    }
    slices = range(1, DATASET_SLICES + 1)
    assert names["Normal"] == sorted(f"{p} ({k}).png" for p in (1, 2, 3) for k in slices)
    assert names["Stroke"] == sorted(f"{p} ({k}).png" for p in (4, 5) for k in slices)
    assert "3 (2).png" in names["Normal"]
    assert sorted(p.name for p in root.iterdir()) == [
        "Normal",
        "Stroke",
        "lesions.json",
        "origin.json",
    ]
    assert summary["patients"] == {"Normal": 3, "Stroke": 2}
    assert summary["patient_ids"] == {"Normal": [1, 2, 3], "Stroke": [4, 5]}
    assert summary["slices"] == {"Normal": 3 * DATASET_SLICES, "Stroke": 2 * DATASET_SLICES}
    assert summary["files_written"] == DATASET_PATIENTS * DATASET_SLICES + 2
    with Image.open(root / "Stroke" / "5 (6).png") as image:
        assert image.mode == "L"
        assert image.size == (DATASET_SIZE, DATASET_SIZE)


def test_png_holds_the_brain_window_of_the_phantom(png_dataset: tuple[Path, dict]) -> None:
    root, _ = png_dataset
    stack = phantom_patient(
        _patient_rng(DATASET_SEED, 4), n_slices=DATASET_SLICES, size=DATASET_SIZE, stroke=True
    )
    for k, phantom in enumerate(stack, start=1):
        with Image.open(root / "Stroke" / f"4 ({k}).png") as image:
            pixels = np.asarray(image)
        np.testing.assert_array_equal(pixels, window_to_uint8(phantom.hu, *BRAIN_WINDOW))


def test_lesions_json_boxes_are_the_tight_boxes_of_the_masks(
    png_dataset: tuple[Path, dict],
) -> None:
    root, summary = png_dataset
    document = json.loads((root / "lesions.json").read_text(encoding="utf-8"))
    listed = {(e["patient"], e["slice"]): e for e in document["lesions"]}
    assert len(listed) == summary["lesion_slices"] > 0
    found = set()
    for patient in summary["patient_ids"]["Stroke"]:
        stack = phantom_patient(
            _patient_rng(DATASET_SEED, patient),
            n_slices=DATASET_SLICES,
            size=DATASET_SIZE,
            stroke=True,
        )
        for k, phantom in enumerate(stack, start=1):
            if phantom.lesion_kind is None:
                continue
            found.add((patient, k))
            entry = listed[(patient, k)]
            assert entry["path"] == f"Stroke/{patient} ({k}).png"
            assert (root / entry["path"]).is_file()
            assert entry["kind"] == phantom.lesion_kind
            x0, y0, x1, y1 = entry["bbox"]
            mask = phantom.lesion_mask
            assert mask[y0:y1, x0:x1].sum() == mask.sum()
            assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
            assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
    assert found == set(listed)


def test_dicom_layout_and_tags(tmp_path: Path) -> None:
    summary = write_dataset(tmp_path, patients=3, slices_per_patient=2, size=64, fmt="dicom")
    assert sorted(p.name for p in (tmp_path / "Normal").iterdir()) == [
        "1 (1).dcm",
        "1 (2).dcm",
        "2 (1).dcm",
        "2 (2).dcm",
    ]
    assert sorted(p.name for p in (tmp_path / "Stroke").iterdir()) == ["3 (1).dcm", "3 (2).dcm"]
    assert (tmp_path / "lesions.json").is_file()
    assert summary["roots"] == [str(tmp_path)]
    first = pydicom.dcmread(tmp_path / "Stroke" / "3 (1).dcm")
    second = pydicom.dcmread(tmp_path / "Stroke" / "3 (2).dcm")
    assert (first.PatientID, first.InstanceNumber, second.InstanceNumber) == ("3", 1, 2)
    assert float(second.ImagePositionPatient[2]) > float(first.ImagePositionPatient[2])
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID


def test_both_writes_the_same_slices_as_png_and_dicom(tmp_path: Path) -> None:
    summary = write_dataset(tmp_path, patients=2, slices_per_patient=4, size=64, fmt="both", seed=5)
    assert summary["roots"] == [str(tmp_path / "png"), str(tmp_path / "dicom")]
    png_names = {
        p.relative_to(tmp_path / "png").with_suffix("") for p in (tmp_path / "png").rglob("*.png")
    }
    dcm_names = {
        p.relative_to(tmp_path / "dicom").with_suffix("")
        for p in (tmp_path / "dicom").rglob("*.dcm")
    }
    assert png_names == dcm_names and len(png_names) == 8
    png_lesions = json.loads((tmp_path / "png" / "lesions.json").read_text(encoding="utf-8"))
    dcm_lesions = json.loads((tmp_path / "dicom" / "lesions.json").read_text(encoding="utf-8"))
    assert [e["path"] for e in dcm_lesions["lesions"]] == [
        e["path"].replace(".png", ".dcm") for e in png_lesions["lesions"]
    ]
    assert [e["bbox"] for e in dcm_lesions["lesions"]] == [
        e["bbox"] for e in png_lesions["lesions"]
    ]
    ds = pydicom.dcmread(tmp_path / "dicom" / "Stroke" / "2 (3).dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    with Image.open(tmp_path / "png" / "Stroke" / "2 (3).png") as image:
        png = np.asarray(image).astype(int)
    # DICOM stores whole HU, so windowing it may differ from the PNG by rounding (2 grey levels).
    assert np.abs(window_to_uint8(hu, *BRAIN_WINDOW).astype(int) - png).max() <= 2


def test_refuses_to_mix_into_an_earlier_data_set(tmp_path: Path) -> None:
    write_dataset(tmp_path, patients=2, slices_per_patient=1, size=32)
    with pytest.raises(FileExistsError, match="already holds files"):
        write_dataset(tmp_path, patients=2, slices_per_patient=1, size=32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"fmt": "jpeg"}, "fmt must be one of"), ({"patients": 0}, "patients must be at least 1")],
)
def test_write_dataset_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"patients": 2, "slices_per_patient": 1, "size": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        write_dataset(tmp_path, **arguments)


# --- anatomy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_air_skull_and_brain_have_their_hu(seed: int) -> None:
    stack = _stack(seed, stroke=False)
    middle = stack[len(stack) // 2].hu
    assert middle.dtype == np.float32 and middle.shape == (128, 128)
    for corner in (middle[:8, :8], middle[:8, -8:], middle[-8:, :8], middle[-8:, -8:]):
        assert abs(float(corner.mean()) + 1000.0) < 3.0
    assert 1300.0 < float(middle.max()) < 1530.0
    assert not ((middle > 100) & (middle < 700)).any(), "bone and soft tissue should not blend"
    row = middle[64]
    inner_left, inner_right = _skull_span(row)
    brain = row[inner_left + 3 : inner_right - 2]
    assert len(brain) > 50
    assert np.percentile(brain, 1) > -15.0 and np.percentile(brain, 99) < 60.0
    assert 15.0 < float(np.median(brain)) < 45.0


def test_head_is_smaller_at_the_top_and_bottom_slices() -> None:
    areas = [int((s.hu > -500).sum()) for s in _stack(4, stroke=False, n_slices=7)]
    assert areas[0] < areas[3] and areas[-1] < areas[3]
    assert areas[1] < areas[2] < areas[3]


@pytest.mark.parametrize("seed", range(8))
def test_stroke_patients_have_one_contiguous_lesion_run(seed: int) -> None:
    n_slices = 8
    stack = _stack(seed, stroke=True, n_slices=n_slices, size=96)
    with_lesion = [i for i, s in enumerate(stack) if s.lesion_mask.any()]
    assert with_lesion, "every stroke patient needs at least one lesion slice"
    assert with_lesion == list(range(with_lesion[0], with_lesion[-1] + 1))
    assert math.ceil(n_slices / 2) <= len(with_lesion) <= n_slices
    kinds = {s.lesion_kind for s in stack if s.lesion_mask.any()}
    assert len(kinds) == 1 and kinds <= {"bleed", "infarct"}
    assert all(s.lesion_kind is None for s in stack if not s.lesion_mask.any())


@pytest.mark.parametrize("seed", range(8))
def test_normal_patients_have_no_lesion(seed: int) -> None:
    for phantom in _stack(seed, stroke=False, n_slices=8, size=96):
        assert phantom.lesion_kind is None
        assert phantom.lesion_mask.dtype == bool and not phantom.lesion_mask.any()


def test_lesion_hu_matches_its_kind() -> None:
    means: dict[str, list[float]] = {"bleed": [], "infarct": []}
    for seed in range(12):
        stack = _stack(seed, stroke=True, n_slices=4)
        kind = next(s.lesion_kind for s in stack if s.lesion_kind)
        pixels = np.concatenate([s.hu[s.lesion_mask] for s in stack])
        means[kind].append(float(pixels.mean()))
    assert means["bleed"] and means["infarct"], "twelve patients should show both kinds"
    assert all(50.0 <= m <= 90.0 for m in means["bleed"]), means["bleed"]
    assert all(10.0 <= m <= 25.0 for m in means["infarct"]), means["infarct"]


@pytest.mark.parametrize("seed", range(6))
def test_lesion_lies_in_brain_parenchyma(seed: int) -> None:
    stroke = _stack(seed, stroke=True)
    normal = _stack(seed, stroke=False)  # same generator: same anatomy and noise, no lesion
    underneath = []
    for sick, healthy in zip(stroke, normal, strict=True):
        mask = sick.lesion_mask
        np.testing.assert_array_equal(sick.hu[~mask], healthy.hu[~mask])
        underneath.append(healthy.hu[mask])
        for y, x in zip(*np.nonzero(mask), strict=True):
            assert (healthy.hu[y, :x] > 500).any() and (healthy.hu[y, x:] > 500).any()
            assert (healthy.hu[:y, x] > 500).any() and (healthy.hu[y:, x] > 500).any()
    pixels = np.concatenate(underneath)
    assert pixels.max() < 200.0, "lesion overlaps the skull"
    assert 20.0 < float(pixels.mean()) < 45.0, "lesion replaces something that is not brain"
    # White matter sits 2.4 noise sigmas above 12 HU; ventricle CSF (3-8 HU) mostly below it.
    assert float((pixels < 12.0).mean()) < 0.05, "lesion overlaps ventricles or CSF"


@pytest.mark.parametrize("seed", range(4))
def test_lesion_is_large_enough_to_see(seed: int) -> None:
    stack = _stack(seed, stroke=True, size=256)
    largest = max(int(s.lesion_mask.sum()) for s in stack)
    inner_left, inner_right = _skull_span(stack[len(stack) // 2].hu[128])
    brain_width = inner_right - inner_left
    equivalent_diameter = 2.0 * math.sqrt(largest / math.pi)
    assert 0.05 * brain_width <= equivalent_diameter <= 0.2 * brain_width


def test_phantom_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_slices"):
        _stack(0, stroke=False, n_slices=0)
    with pytest.raises(ValueError, match="size"):
        _stack(0, stroke=False, size=8)


# --- windowing --------------------------------------------------------------------------------


def test_window_to_uint8_on_hand_computed_values() -> None:
    hu = np.array([[-1000.0, -1.0, 0.0, 20.0, 40.0], [60.0, 80.0, 81.0, 3000.0, 10.0]])
    pixels = window_to_uint8(hu, 40.0, 80.0)
    assert pixels.dtype == np.uint8 and pixels.shape == hu.shape
    assert pixels[0, :4].tolist() == [0, 0, 0, 64]  # 20 HU: 63.75
    assert pixels[0, 4] in (127, 128)  # 40 HU: 127.5
    assert pixels[1].tolist() == [191, 255, 255, 255, 32]  # 60 HU: 191.25, 10 HU: 31.875


def test_window_to_uint8_rejects_empty_width() -> None:
    with pytest.raises(ValueError, match="width"):
        window_to_uint8(np.zeros((2, 2)), 40.0, 0.0)


# --- DICOM ------------------------------------------------------------------------------------


def _slice_hu() -> np.ndarray:
    hu = _stack(9, stroke=True, n_slices=1, size=64)[0].hu.copy()
    hu[0, :3] = [-1024.0, 2500.0, 57.3]
    return hu


def test_dicom_round_trip_with_slope_and_intercept(tmp_path: Path) -> None:
    hu = _slice_hu()
    path = tmp_path / "7 (3).dcm"
    write_ct_dicom(path, hu, patient_id="7", instance_number=3, slope=2.0, intercept=-1000.0)
    ds = pydicom.dcmread(path)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1000.0)
    stored = ds.pixel_array
    assert stored.dtype == np.int16 and stored.shape == hu.shape
    restored = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.abs(restored - hu).max() <= 1.0 + 1e-4


def test_dicom_is_a_part10_ct_image(tmp_path: Path) -> None:
    path = tmp_path / "7 (3).dcm"
    write_ct_dicom(path, _slice_hu(), patient_id="7", instance_number=3, slice_position_mm=12.5)
    raw = path.read_bytes()
    assert raw[:128] == bytes(128) and raw[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == CT_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert (ds.Modality, ds.PatientID, str(ds.PatientName)) == ("CT", "7", "Phantom^7")
    assert ds.InstanceNumber == 3
    assert [float(x) for x in ds.ImagePositionPatient] == [0.0, 0.0, 12.5]
    assert [float(x) for x in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert len(ds.PixelSpacing) == 2 and float(ds.SliceThickness) > 0
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (64, 64, 1)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40.0, 80.0)
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert len(uid) <= 64 and UID_PATTERN.fullmatch(uid), uid
        assert uid.startswith("1.2.826.0.1.3680043.10.1099.")


def test_dicom_uids_and_bytes_are_deterministic(tmp_path: Path) -> None:
    hu = _slice_hu()
    for name, instance in (("a.dcm", 1), ("b.dcm", 1), ("c.dcm", 2)):
        write_ct_dicom(tmp_path / name, hu, patient_id="7", instance_number=instance)
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    a, c = pydicom.dcmread(tmp_path / "a.dcm"), pydicom.dcmread(tmp_path / "c.dcm")
    assert (a.StudyInstanceUID, a.SeriesInstanceUID) == (c.StudyInstanceUID, c.SeriesInstanceUID)
    assert a.SOPInstanceUID != c.SOPInstanceUID
    write_ct_dicom(tmp_path / "d.dcm", hu, patient_id="7", instance_number=1, seed=1)
    assert pydicom.dcmread(tmp_path / "d.dcm").StudyInstanceUID != a.StudyInstanceUID


def test_monochrome1_is_only_a_flag_not_inverted_data(tmp_path: Path) -> None:
    hu = _slice_hu()
    write_ct_dicom(tmp_path / "m2.dcm", hu, patient_id="1", instance_number=1)
    write_ct_dicom(
        tmp_path / "m1.dcm", hu, patient_id="1", instance_number=1, photometric="MONOCHROME1"
    )
    m1, m2 = pydicom.dcmread(tmp_path / "m1.dcm"), pydicom.dcmread(tmp_path / "m2.dcm")
    assert m1.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(m1.pixel_array, m2.pixel_array)


def test_dicom_for_negative_tests(tmp_path: Path) -> None:
    hu = _slice_hu()
    write_ct_dicom(tmp_path / "empty.dcm", hu, patient_id="1", instance_number=1, with_pixels=False)
    write_ct_dicom(tmp_path / "mr.dcm", hu, patient_id="1", instance_number=1, modality="MR")
    empty = pydicom.dcmread(tmp_path / "empty.dcm")
    assert "PixelData" not in empty and empty.Rows == 64
    assert pydicom.dcmread(tmp_path / "mr.dcm").Modality == "MR"


def test_dicom_clips_to_int16(tmp_path: Path) -> None:
    hu = np.array([[-40000.0, 0.0], [40000.0, 5.0]], dtype=np.float32)
    write_ct_dicom(tmp_path / "x.dcm", hu, patient_id="1", instance_number=1, intercept=0.0)
    assert pydicom.dcmread(tmp_path / "x.dcm").pixel_array.tolist() == [[-32768, 0], [32767, 5]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"photometric": "RGB"}, "photometric"), ({"slope": 0.0}, "slope")],
)
def test_write_ct_dicom_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_ct_dicom(tmp_path / "x.dcm", _slice_hu(), patient_id="1", instance_number=1, **kwargs)


def test_write_ct_dicom_wants_one_2d_slice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_ct_dicom(tmp_path / "x.dcm", np.zeros((2, 4, 4)), patient_id="1", instance_number=1)


def test_module_does_not_import_torch() -> None:
    # A fresh interpreter: in this one, other tests may have imported torch already.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = "import sys, ml.data.synth; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "ml.data.synth imported torch"
