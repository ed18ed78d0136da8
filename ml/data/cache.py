"""Decode every slice once, resize it, and keep the result as one uint8 array on disk.

The cache key is made of the files' content hashes (not their names or dates) and of every
setting that changes the pixels, so a renamed file still hits and an edited one misses.
Epochs then read a memory-mapped array instead of decoding JPEGs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ml.data.readers import UnreadableImage, read_slice
from ml.hashing import sha256_file

CACHE_VERSION = 2  # bump when decoding or resizing changes (2: each slice's frame is kept)


@dataclass
class DecodedSet:
    images: np.ndarray  # uint8 (N_ok, size, size, C) for the readable files, in record order
    kept: list[int]  # record indices of the rows of `images`
    bad: list[tuple[int, str]]  # (record index, reason) of files that could not be read
    file_hashes: list[str]  # sha256 of every file's bytes, all records
    pixel_hashes: list[str | None]  # sha256 of the decoded pixels at full size, None if bad
    frames: np.ndarray  # float (N_ok, 3): each row's frame (see `network_frame`)


def to_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square (keeping the aspect ratio) and resize to size x size, area averaging."""
    height, width = pixels.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros((side, side, pixels.shape[2]), dtype=np.uint8)
    square[top : top + height, left : left + width] = pixels
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    resized = cv2.resize(square, (size, size), interpolation=interpolation)
    return resized.reshape(size, size, pixels.shape[2])


def network_pixels(
    pixels: np.ndarray, channels: int, size: int, *, crop_head: bool = False
) -> np.ndarray:
    """Decoded pixels as the network sees them: `channels` channels, size x size, uint8.

    Training (through the cache) and every later prediction call this one function.
    """
    return network_frame(pixels, channels, size, crop_head=crop_head)[0]


def network_frame(
    pixels: np.ndarray, channels: int, size: int, *, crop_head: bool = False
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """`network_pixels`, and the frame that placed them: (scale, x shift, y shift).

    A pixel at column x, row y of the decoded slice lands at scale * x + x shift, scale * y +
    y shift of the network image (pixel centres). Two slices of one patient cropped to their
    own heads have different frames; `ml.data.context.align` uses them to redraw one in the other's.
    """
    if pixels.shape[2] != channels:  # an 8-bit image carries one, already windowed, channel
        pixels = np.repeat(pixels[..., :1], channels, axis=2)
    height, width = pixels.shape[:2]
    top, bottom, left, right = head_box(pixels[..., 0]) if crop_head else (0, height, 0, width)
    pixels = pixels[top:bottom, left:right]
    side = max(bottom - top, right - left)
    scale = size / side
    pad_y, pad_x = (side - (bottom - top)) // 2, (side - (right - left)) // 2
    shift = scale / 2 - 0.5  # resizing maps pixel centres, not pixel corners
    frame = (scale, scale * (pad_x - left) + shift, scale * (pad_y - top) + shift)
    return to_square(pixels, size), frame


HEAD_LEVEL = 10  # grey level above which a pixel may be tissue (air and padding are ~0)
HEAD_MIN_SHARE = 0.02  # a smaller bright region is not a head: keep the whole image
HEAD_MARGIN = 0.04  # of the box side, kept around the head


def head_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the largest bright connected region, with a margin.

    The whole image when no region is large enough to be a head (a blank or odd slice), so a
    crop can never remove the content.
    """
    height, width = grey.shape
    mask = (grey > HEAD_LEVEL).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return 0, height, 0, width
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = stats[largest]
    if area < HEAD_MIN_SHARE * height * width:
        return 0, height, 0, width
    margin = round(float(HEAD_MARGIN * max(w, h)))
    return (
        max(0, y - margin),
        min(height, y + h + margin),
        max(0, x - margin),
        min(width, x + w + margin),
    )


def decode_all(
    paths: Sequence[Path],
    *,
    image_size: int,
    windows: tuple[tuple[float, float], ...],
    png16_hu_offset: float,
    cache_dir: Path | None,
    progress: bool = True,
    crop_head: bool = False,
) -> DecodedSet:
    """Decode and resize every file, from the cache when the same files were seen before."""
    file_hashes = [sha256_file(p) for p in paths]
    key = _cache_key(file_hashes, image_size, windows, png16_hu_offset, crop_head)
    if cache_dir is not None:
        cached = _load(Path(cache_dir), key, file_hashes)
        if cached is not None:
            return cached
    decoded = _decode(paths, file_hashes, image_size, windows, png16_hu_offset, progress, crop_head)
    if cache_dir is not None:
        _save(Path(cache_dir), key, decoded)
    return decoded


def _decode(
    paths: Sequence[Path],
    file_hashes: list[str],
    image_size: int,
    windows: tuple[tuple[float, float], ...],
    png16_hu_offset: float,
    progress: bool,
    crop_head: bool,
) -> DecodedSet:
    channels = len(windows)
    images: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[tuple[int, str]] = []
    pixel_hashes: list[str | None] = []
    frames: list[tuple[float, float, float]] = []
    for index, path in enumerate(tqdm(paths, desc="decode", disable=not progress, leave=False)):
        try:
            pixels = read_slice(path, windows=windows, png16_hu_offset=png16_hu_offset).pixels
        except UnreadableImage as exc:
            bad.append((index, str(exc)))
            pixel_hashes.append(None)
            continue
        pixel_hashes.append(hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest())
        image, frame = network_frame(pixels, channels, image_size, crop_head=crop_head)
        images.append(image)
        frames.append(frame)
        kept.append(index)
    stacked = (
        np.stack(images) if images else np.zeros((0, image_size, image_size, channels), np.uint8)
    )
    return DecodedSet(
        stacked, kept, bad, file_hashes, pixel_hashes, np.array(frames, float).reshape(-1, 3)
    )


def _cache_key(
    file_hashes: list[str],
    image_size: int,
    windows: tuple[tuple[float, float], ...],
    png16_hu_offset: float,
    crop_head: bool,
) -> str:
    settings = [image_size, [list(w) for w in windows], png16_hu_offset]
    if crop_head:  # keys of caches made before the option existed stay valid
        settings.append("crop_head")
    spec = json.dumps([CACHE_VERSION, *settings, file_hashes])
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def _load(cache_dir: Path, key: str, file_hashes: list[str]) -> DecodedSet | None:
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not (array_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # a damaged cache is rebuilt, never trusted
    frames = np.array(meta.get("frames", []), dtype=float).reshape(-1, 3)
    if not len(meta["kept"]) == images.shape[0] == frames.shape[0]:
        return None
    return DecodedSet(
        images=images,
        kept=meta["kept"],
        bad=[tuple(b) for b in meta["bad"]],
        file_hashes=file_hashes,
        pixel_hashes=meta["pixel_hashes"],
        frames=frames,
    )


def _save(cache_dir: Path, key: str, decoded: DecodedSet) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{key}.tmp.npy"
    np.save(tmp, decoded.images)
    meta = {
        "kept": decoded.kept,
        "bad": decoded.bad,
        "pixel_hashes": decoded.pixel_hashes,
        "frames": decoded.frames.tolist(),
    }
    (cache_dir / f"{key}.json").write_text(json.dumps(meta))
    tmp.replace(cache_dir / f"{key}.npy")  # the array appears only when complete
