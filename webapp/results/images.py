"""Images of a stored slice: display windows at the slice's own size, cached beside the file, and
where the Grad-CAM heat map (made at the network's input size) lies on them.

The network sees a square: the slice (or, with the bundle's `crop_head`, the box around the
head) padded to a square and resized. Its heat map covers that square, so the page lays it over
the stored slice through the same frame (`ml.network_frame`), not over the whole image.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ml import network_frame, read_slice
from webapp import storage
from webapp.models import Prediction, SliceResult

# (level, width) in HU. "model" is whatever the bundle's training used.
WINDOW_PRESETS = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "stroke": (32.0, 8.0),
    "bone": (600.0, 2800.0),
}


@dataclass(frozen=True)
class Placement:
    """The stored slice's size, and the network's square on it in percent of that size (the
    square can reach past the image where it was padded)."""

    width: int
    height: int
    left: float
    top: float
    square_width: float
    square_height: float


def has_hu(slice_result: SliceResult) -> bool:
    """DICOM and 16-bit PNG keep CT values, so any window can be drawn; 8-bit images cannot."""
    info = slice_result.info or {}
    return slice_result.file_format == "dicom" or info.get("bit_depth") == 16


def windows_for(slice_result: SliceResult) -> list[str]:
    return ["model", *WINDOW_PRESETS] if has_hu(slice_result) else ["model"]


def window_png(prediction: Prediction, slice_result: SliceResult, window: str) -> Path:
    """The slice under a window, as a PNG at its own size; drawn once, then cached."""
    if window not in windows_for(slice_result):
        raise ValueError(f"window {window!r} is not available for this image")
    # "view-": the name of the full-size rendering (older "window-" files were network-sized).
    target = storage.cache_path(slice_result.stored_name, f"view-{window}.png")
    if target.exists():
        return target
    prep = prediction.preprocessing
    windows = _windows(prep) if window == "model" else (WINDOW_PRESETS[window],)
    pixels = read_slice(
        storage.path_of(slice_result.stored_name),
        windows=windows,
        png16_hu_offset=prep.get("png16_hu_offset", -1024.0),
    ).pixels
    _write_png(target, pixels if pixels.shape[2] == 3 else pixels[..., 0])
    return target


def placement(prediction: Prediction, slice_result: SliceResult) -> Placement:
    """Where the heat map goes on the stored slice: the frame the network's input was cut with."""
    prep = prediction.preprocessing
    return _placement(
        str(storage.path_of(slice_result.stored_name)),
        _windows(prep),
        prep.get("png16_hu_offset", -1024.0),
        prep["image_size"],
        bool(prep.get("crop_head", False)),
    )


@lru_cache(maxsize=1024)  # a stored slice never changes; a page view should not decode it again
def _placement(
    path: str,
    windows: tuple[tuple[float, float], ...],
    png16_hu_offset: float,
    size: int,
    crop_head: bool,
) -> Placement:
    pixels = read_slice(Path(path), windows=windows, png16_hu_offset=png16_hu_offset).pixels
    height, width = pixels.shape[:2]
    scale, x_shift, y_shift = network_frame(pixels, len(windows), size, crop_head=crop_head)[1]
    # The frame maps pixel centres (x -> scale * x + shift); the square's corner 0 of the
    # network image sits half a network pixel before its first centre.
    left = (scale / 2 - 0.5 - x_shift) / scale
    top = (scale / 2 - 0.5 - y_shift) / scale
    side = size / scale
    return Placement(
        width=width,
        height=height,
        left=100 * left / width,
        top=100 * top / height,
        square_width=100 * side / width,
        square_height=100 * side / height,
    )


def _windows(preprocessing: dict) -> tuple[tuple[float, float], ...]:
    return tuple((float(w[0]), float(w[1])) for w in preprocessing["windows"])


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Written aside and moved into place, so a concurrent request never reads half a file."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{storage.PARTIAL}")
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)
