"""ml.data.dataset: class folders, manifests, patient ids and the notes a user must read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.config import DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX
from ml.data.dataset import compile_patient_regex, load_dataset, patient_from_name


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), 80, np.uint8)).save(path)


@pytest.mark.parametrize(
    ("name", "patient", "number"),
    [
        ("101 (12).jpg", "101", 12),
        ("49 (1).png", "49", 1),
        ("7(3).jpeg", "7", 3),
        ("scan.png", None, None),
        ("(3).png", None, None),
    ],
)
def test_default_patient_regex(name: str, patient: str | None, number: int | None) -> None:
    assert patient_from_name(name, compile_patient_regex(DEFAULT_PATIENT_REGEX)) == (
        patient,
        number,
    )


def test_patient_regex_needs_a_patient_group() -> None:
    with pytest.raises(ValueError, match="patient"):
        compile_patient_regex(r"^(\d+)")


def test_class_folders_with_spaces_and_nesting(tmp_path: Path) -> None:
    for rel in ["Normal/1 (1).jpg", "Normal/1 (2).jpg", "Bleeding/PNG/2 (1).png"]:
        _image(tmp_path / rel)
    _image(tmp_path / "Ischemia/3 (1).png")
    (tmp_path / "Normal/notes.txt").write_text("not an image")
    dataset = load_dataset(tmp_path, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
    by_path = {r.rel_path: r for r in dataset.records}
    assert set(by_path) == {"Normal/1 (1).jpg", "Normal/1 (2).jpg", "Bleeding/PNG/2 (1).png",
                            "Ischemia/3 (1).png"}  # fmt: skip
    assert by_path["Bleeding/PNG/2 (1).png"].label == 1
    assert by_path["Ischemia/3 (1).png"].label == 1
    assert by_path["Normal/1 (2).jpg"].patient_id == "1"
    assert by_path["Normal/1 (2).jpg"].slice_number == 2
    assert dataset.ignored == [("Normal/notes.txt", "not an image file type (.txt)")]
    assert dataset.summary()["patients"] == {"Normal": 1, "Stroke": 2}
    assert dataset.grouped_by_file == 0


def test_unknown_class_folder_says_how_to_map_it(tmp_path: Path) -> None:
    _image(tmp_path / "Normal/1 (1).png")
    _image(tmp_path / "Tumour/2 (1).png")
    with pytest.raises(ValueError, match=r"Tumour.*--class-map"):
        load_dataset(tmp_path, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)


def test_custom_class_map(tmp_path: Path) -> None:
    _image(tmp_path / "healthy/1 (1).png")
    _image(tmp_path / "sick/2 (1).png")
    dataset = load_dataset(tmp_path, {"healthy": 0, "sick": 1}, DEFAULT_PATIENT_REGEX)
    assert sorted(dataset.labels) == [0, 1]


def test_manifest_with_patient_ids(tmp_path: Path) -> None:
    for name in ["a.png", "b.png", "c.png"]:
        _image(tmp_path / "img" / name)
    (tmp_path / "list.csv").write_text(
        "path,label,patient_id\nimg/a.png,Normal,P1\nimg/b.png,1,P2\nimg/c.png,0,P1\n"
        "img/gone.png,0,P3\n"
    )
    dataset = load_dataset(tmp_path / "list.csv", DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
    assert [(r.rel_path, r.label, r.patient_id) for r in dataset.records] == [
        ("img/a.png", 0, "P1"),
        ("img/c.png", 0, "P1"),
        ("img/b.png", 1, "P2"),
    ]
    assert dataset.ignored == [("img/gone.png", "listed in the manifest but missing")]


def test_files_without_patient_ids_are_their_own_group_and_reported(tmp_path: Path) -> None:
    for name in ["x.png", "y.png"]:
        _image(tmp_path / "img" / name)
    (tmp_path / "list.csv").write_text("path,label\nimg/x.png,0\nimg/y.png,1\n")
    dataset = load_dataset(tmp_path / "list.csv", DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
    assert dataset.grouped_by_file == 2
    assert len(set(dataset.patients)) == 2
    assert any("not by patient" in note for note in dataset.notes)


def test_bad_manifest_label_names_the_line(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("path,label\na.png,maybe\n")
    with pytest.raises(ValueError, match="line 2"):
        load_dataset(tmp_path / "list.csv", DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)


def test_one_class_only_is_refused(tmp_path: Path) -> None:
    _image(tmp_path / "Normal/1 (1).png")
    with pytest.raises(ValueError, match="both classes"):
        load_dataset(tmp_path, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)


def test_head_box_finds_the_head_and_ignores_specks() -> None:
    from ml.data.cache import head_box

    grey = np.zeros((200, 300), np.uint8)
    yy, xx = np.mgrid[:200, :300]
    grey[(yy - 120) ** 2 + (xx - 200) ** 2 < 50**2] = 120  # the head, off centre
    grey[10:13, 10:13] = 255  # a bright speck (a marker, text) far from it
    top, bottom, left, right = head_box(grey)
    assert 60 <= top <= 72 and 168 <= bottom <= 180
    assert 140 <= left <= 152 and 248 <= right <= 260
    assert head_box(np.zeros((50, 60), np.uint8)) == (0, 50, 0, 60)  # nothing: keep everything


def test_crop_head_changes_the_network_input_and_the_cache_key(tmp_path: Path) -> None:
    from ml.data.cache import decode_all, network_pixels

    grey = np.zeros((120, 120), np.uint8)
    grey[30:70, 40:80] = 150
    plain = network_pixels(grey[..., None], 3, 64)
    cropped = network_pixels(grey[..., None], 3, 64, crop_head=True)
    assert (cropped[..., 0] > 0).mean() > 2 * (plain[..., 0] > 0).mean()  # the head fills it
    path = tmp_path / "slice.png"
    Image.fromarray(grey).save(path)
    kw = {"image_size": 64, "windows": ((40.0, 80.0),), "png16_hu_offset": -1024.0}
    a = decode_all([path], cache_dir=tmp_path / "c", progress=False, **kw)
    b = decode_all([path], cache_dir=tmp_path / "c", progress=False, crop_head=True, **kw)
    assert not np.array_equal(np.asarray(a.images), np.asarray(b.images))
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2


def test_prediction_preprocessing_follows_the_bundle_crop_setting(tmp_path: Path) -> None:
    from ml.config import make_config
    from ml.data.cache import network_pixels
    from ml.infer.prepare import prepare_slice

    grey = np.zeros((120, 120), np.uint8)
    grey[20:60, 50:100] = 140
    path = tmp_path / "slice.png"
    Image.fromarray(grey).save(path)
    for crop in (False, True):
        cfg = make_config("test", crop_head=crop)
        prepared = prepare_slice(path, cfg, (0.5,) * 3, (0.25,) * 3)
        channels = len(cfg.windows)
        expected = network_pixels(grey[..., None], channels, cfg.image_size, crop_head=crop)
        assert np.array_equal(prepared.windowed, expected)
