"""Images of a stored slice: display windows and the Grad-CAM heat map, cached beside the file.

Every image is drawn at the network's input geometry (padded to a square, resized), so the heat
map lies exactly over the slice whatever window is shown.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ml import network_pixels, read_slice
from webapp import storage
from webapp.models import Prediction, SliceResult

# (level, width) in HU. "model" is whatever the bundle's training used.
WINDOW_PRESETS = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "stroke": (32.0, 8.0),
    "bone": (600.0, 2800.0),
}


def has_hu(slice_result: SliceResult) -> bool:
    """DICOM and 16-bit PNG keep CT values, so any window can be drawn; 8-bit images cannot."""
    info = slice_result.info or {}
    return slice_result.file_format == "dicom" or info.get("bit_depth") == 16


def windows_for(slice_result: SliceResult) -> list[str]:
    return ["model", *WINDOW_PRESETS] if has_hu(slice_result) else ["model"]


def window_png(prediction: Prediction, slice_result: SliceResult, window: str) -> Path:
    """The slice under a window, as a PNG at the network size; drawn once, then cached."""
    if window not in windows_for(slice_result):
        raise ValueError(f"window {window!r} is not available for this image")
    target = storage.cache_path(slice_result.stored_name, f"window-{window}.png")
    if target.exists():
        return target
    prep = prediction.preprocessing
    windows = (
        tuple(tuple(w) for w in prep["windows"]) if window == "model" else (WINDOW_PRESETS[window],)
    )
    decoded = read_slice(
        storage.path_of(slice_result.stored_name),
        windows=windows,
        png16_hu_offset=prep.get("png16_hu_offset", -1024.0),
    )
    pixels = network_pixels(
        decoded.pixels, len(windows), prep["image_size"], crop_head=prep.get("crop_head", False)
    )
    _write_png(target, pixels if pixels.shape[2] == 3 else pixels[..., 0])
    return target


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
