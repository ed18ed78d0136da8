"""ml.data.readers: formats by content, HU and windows, and a clear refusal for every bad file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.data.readers import UnreadableImage, apply_windows, read_slice, sniff_format
from ml.data.synth import write_ct_dicom

BRAIN = (40.0, 80.0)
THREE = ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _hu_ramp() -> np.ndarray:
    """A 32 x 32 image whose columns run from -40 to 177 HU in whole steps (DICOM stores ints)."""
    return np.tile(np.arange(-40, 184, 7, dtype=np.float32), (32, 1))


def test_sniff_format_uses_content_not_names() -> None:
    assert sniff_format(_png_bytes(np.zeros((20, 20), np.uint8))[:132]) == "png"
    assert sniff_format(_jpeg_bytes(np.zeros((20, 20), np.uint8))[:132]) == "jpeg"
    assert sniff_format(b"\0" * 128 + b"DICM") == "dicom"
    assert sniff_format(b"hello, this is text") is None


def test_eight_bit_png_is_taken_as_windowed() -> None:
    gray = np.arange(32 * 32, dtype=np.uint32).reshape(32, 32).astype(np.uint8)
    decoded = read_slice(_png_bytes(gray))
    assert decoded.format == "png"
    assert decoded.pixels.shape == (32, 32, 1)
    np.testing.assert_array_equal(decoded.pixels[..., 0], gray)


def test_rgb_jpeg_becomes_one_grey_channel() -> None:
    gray = np.full((32, 32), 100, np.uint8)
    decoded = read_slice(_jpeg_bytes(np.stack([gray] * 3, axis=-1)))
    assert decoded.pixels.shape == (32, 32, 1)
    assert abs(int(decoded.pixels.mean()) - 100) <= 2


def test_sixteen_bit_png_is_raw_ct_minus_1024() -> None:
    # Stored 1024 + HU; the brain window maps 0 HU to 0, 40 HU to mid-grey, 80 HU to white.
    stored = np.array([[1024, 1064, 1104, 0]] * 16, dtype=np.uint16)
    stored = np.repeat(stored, 4, axis=1)
    decoded = read_slice(_png_bytes(stored), windows=(BRAIN,))
    row = decoded.pixels[0, ::4, 0].tolist()
    assert row[0] == 0 and row[2] == 255 and row[3] == 0
    assert row[1] in (127, 128)
    assert decoded.info["bit_depth"] == 16


def test_dicom_rescale_gives_hounsfield_units(tmp_path: Path) -> None:
    hu = _hu_ramp()
    path = tmp_path / "slope.dcm"
    write_ct_dicom(path, hu, patient_id="7", instance_number=3, slope=2.0, intercept=-1000.0)
    decoded = read_slice(path, windows=(BRAIN,))
    expected = apply_windows(hu, (BRAIN,))
    assert decoded.format == "dicom"
    assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).max() <= 4  # slope 2 rounds
    assert decoded.info["instance_number"] == 3
    assert decoded.info["rescale_slope"] == 2.0


def test_dicom_monochrome1_is_shown_inverted(tmp_path: Path) -> None:
    hu = _hu_ramp()
    write_ct_dicom(tmp_path / "m2.dcm", hu, patient_id="1", instance_number=1)
    write_ct_dicom(
        tmp_path / "m1.dcm", hu, patient_id="1", instance_number=1, photometric="MONOCHROME1"
    )
    m2 = read_slice(tmp_path / "m2.dcm").pixels
    m1 = read_slice(tmp_path / "m1.dcm").pixels
    np.testing.assert_array_equal(m1, 255 - m2)
    assert m2[0, 0, 0] == 0 and m2[0, -1, 0] == 255  # bright means dense in MONOCHROME2


def test_three_windows_stack_as_channels(tmp_path: Path) -> None:
    hu = _hu_ramp()
    write_ct_dicom(tmp_path / "s.dcm", hu, patient_id="1", instance_number=1)
    pixels = read_slice(tmp_path / "s.dcm", windows=THREE).pixels
    assert pixels.shape == (32, 32, 3)
    for channel, window in enumerate(THREE):
        np.testing.assert_array_equal(pixels[..., channel], apply_windows(hu, (window,))[..., 0])
    assert len({pixels[..., c].tobytes() for c in range(3)}) == 3


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG header that claims a size, with a tiny IDAT: a decompression-bomb probe."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is a text file, renamed to .png\n", "not a PNG, JPEG or DICOM"),
        (_png_bytes(np.zeros((64, 64), np.uint8))[:60], "damaged or truncated"),
        (_jpeg_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:300], "JPEG"),
        (_png_declaring(20_000, 20_000), "limit"),
        (_png_bytes(np.zeros((4, 4), np.uint8)), "too small"),
    ],
    ids=["zero-bytes", "text", "truncated-png", "truncated-jpeg", "bomb", "tiny"],
)
def test_bad_raster_files_are_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(UnreadableImage, match=message):
        read_slice(data)


def test_non_ct_dicom_is_refused(tmp_path: Path) -> None:
    write_ct_dicom(
        tmp_path / "mr.dcm", _hu_ramp(), patient_id="1", instance_number=1, modality="MR"
    )
    with pytest.raises(UnreadableImage, match="MR, not CT"):
        read_slice(tmp_path / "mr.dcm")


def test_dicom_without_pixels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    write_ct_dicom(path, _hu_ramp(), patient_id="1", instance_number=1, with_pixels=False)
    with pytest.raises(UnreadableImage, match="no pixel data"):
        read_slice(path)


def test_truncated_dicom_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    write_ct_dicom(path, _hu_ramp(), patient_id="1", instance_number=1)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(UnreadableImage):
        read_slice(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="cannot be read"):
        read_slice(tmp_path / "nope.png")
