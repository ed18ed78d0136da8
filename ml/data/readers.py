"""Decode one CT slice (PNG, JPEG, 16-bit PNG or DICOM) into windowed uint8 pixels.

The format is decided by the file's content (magic bytes), never by its name. Every way a
file can be bad ends in `UnreadableImage` with a sentence a user can act on.

- 8-bit PNG/JPEG are taken as already windowed: one grey channel.
- 16-bit PNG holds raw CT values: HU = stored value + `png16_hu_offset` (default -1024).
- DICOM: RescaleSlope/Intercept give HU; the window(s) map HU to 0-255. MONOCHROME1 means the
  viewer shows the grey scale inverted, so the windowed image is inverted to look like the
  MONOCHROME2 image a viewer displays.
Several windows stack as channels (for example brain 40/80, subdural 80/200, bone 600/2800).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.errors import UserError

MAX_PIXELS = 8192 * 8192
MIN_SIDE = 16
BRAIN_WINDOW = (40.0, 80.0)

FORMATS = ("png", "jpeg", "dicom")


class UnreadableImage(UserError, ValueError):
    """The file is not a usable CT slice; the message says why."""


@dataclass(frozen=True)
class DecodedSlice:
    pixels: np.ndarray  # uint8 (H, W, C), C = 1 or the number of windows
    format: str
    info: dict[str, Any] = field(default_factory=dict)


def sniff_format(head: bytes) -> str | None:
    """'png', 'jpeg', 'dicom' or None, from the first 132 bytes of a file."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    return None


def read_slice(
    source: Path | str | bytes,
    *,
    windows: tuple[tuple[float, float], ...] = (BRAIN_WINDOW,),
    png16_hu_offset: float = -1024.0,
    max_pixels: int = MAX_PIXELS,
) -> DecodedSlice:
    """Decode a file or its bytes; raise `UnreadableImage` for anything that is not a CT slice."""
    data = _read_bytes(source)
    if not data:
        raise UnreadableImage("file is empty (0 bytes)")
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise UnreadableImage("file is not a PNG, JPEG or DICOM image")
    if fmt == "dicom":
        return _read_dicom(data, windows, max_pixels)
    return _read_raster(data, fmt, windows, png16_hu_offset, max_pixels)


def apply_windows(hu: np.ndarray, windows: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Map HU to uint8 through each (level, width) window; one channel per window."""
    channels = []
    for level, width in windows:
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width}")
        low = level - width / 2.0
        scaled = (hu.astype(np.float32) - low) / width
        channels.append(np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8))
    return np.stack(channels, axis=-1)


def _read_bytes(source: Path | str | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"file cannot be read: {exc.strerror or exc}") from None


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise UnreadableImage(
            f"image is {width} x {height} pixels, above the limit of {max_pixels:,} pixels"
        )
    if min(width, height) < MIN_SIDE:
        raise UnreadableImage(f"image is {width} x {height} pixels, too small for a CT slice")


def _read_raster(
    data: bytes,
    fmt: str,
    windows: tuple[tuple[float, float], ...],
    png16_hu_offset: float,
    max_pixels: int,
) -> DecodedSlice:
    try:
        with warnings.catch_warnings():
            # Pillow warns about decompression bombs; here they are simply refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(*image.size, max_pixels)
            image.load()
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnreadableImage("image declares more pixels than the limit allows") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"{fmt.upper()} data is damaged or truncated ({exc})") from None
    info = {"mode": image.mode, "width": image.width, "height": image.height}
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        hu = np.asarray(image, dtype=np.float32) + png16_hu_offset
        return DecodedSlice(apply_windows(hu, windows), fmt, {**info, "bit_depth": 16})
    grey = np.asarray(image.convert("L"), dtype=np.uint8)
    return DecodedSlice(grey[..., None], fmt, {**info, "bit_depth": 8})


def _read_dicom(
    data: bytes, windows: tuple[tuple[float, float], ...], max_pixels: int
) -> DecodedSlice:
    """A slice is accepted or refused here, never half-read: a tag too damaged to interpret
    refuses the file, and pydicom's warnings about values that break the standard stay quiet
    (the checks below decide)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _interpret_dicom(data, windows, max_pixels)
        except UnreadableImage:
            raise
        except Exception as exc:
            # pydicom raises a dozen types on hostile bytes (NotImplementedError for an unknown
            # VR, BytesLengthException, struct.error, ...), found by fuzzing; every one of them
            # means this file cannot be read.
            raise UnreadableImage(f"DICOM file is damaged ({type(exc).__name__}: {exc})") from None


def _interpret_dicom(
    data: bytes, windows: tuple[tuple[float, float], ...], max_pixels: int
) -> DecodedSlice:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        raise UnreadableImage(f"DICOM file is damaged ({exc})") from None
    modality = str(ds.get("Modality", "")).upper()
    if modality != "CT":
        raise UnreadableImage(f"DICOM modality is {modality or 'missing'}, not CT")
    if "PixelData" not in ds:
        raise UnreadableImage("DICOM file has no pixel data")
    _check_size(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), max_pixels)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable transfer syntaxes
        syntax = getattr(ds.file_meta, "TransferSyntaxUID", "unknown")
        raise UnreadableImage(
            f"DICOM pixel data cannot be decoded here (transfer syntax {syntax}: {exc})"
        ) from None
    if stored.ndim != 2:
        raise UnreadableImage(f"DICOM holds {stored.ndim}-D pixel data; expected one 2-D slice")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    hu = stored.astype(np.float32) * slope + intercept
    pixels = apply_windows(hu, windows)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return DecodedSlice(pixels, "dicom", _dicom_info(ds, photometric, slope, intercept))


def _dicom_info(ds: Any, photometric: str, slope: float, intercept: float) -> dict[str, Any]:
    """Tags that later steps need: slice order and provenance, nothing that identifies a patient."""
    position = ds.get("ImagePositionPatient")
    number = ds.get("InstanceNumber")
    return {
        "modality": "CT",
        "photometric": photometric,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "instance_number": int(number) if number not in (None, "") else None,
        "slice_position": float(position[2]) if position else None,
        "width": int(ds.Columns),
        "height": int(ds.Rows),
    }
