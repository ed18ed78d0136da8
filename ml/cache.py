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

from ml.hashing import sha256_file
from ml.readers import UnreadableImage, read_slice

CACHE_VERSION = 1  # bump when decoding or resizing changes


@dataclass
class DecodedSet:
    images: np.ndarray  # uint8 (N_ok, size, size, C) for the readable files, in record order
    kept: list[int]  # record indices of the rows of `images`
    bad: list[tuple[int, str]]  # (record index, reason) of files that could not be read
    file_hashes: list[str]  # sha256 of every file's bytes, all records
    pixel_hashes: list[str | None]  # sha256 of the decoded pixels at full size, None if bad


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


def network_pixels(pixels: np.ndarray, channels: int, size: int) -> np.ndarray:
    """Decoded pixels as the network sees them: `channels` channels, size x size, uint8.

    Training (through the cache) and every later prediction call this one function.
    """
    if pixels.shape[2] != channels:  # an 8-bit image carries one, already windowed, channel
        pixels = np.repeat(pixels[..., :1], channels, axis=2)
    return to_square(pixels, size)


def decode_all(
    paths: Sequence[Path],
    *,
    image_size: int,
    windows: tuple[tuple[float, float], ...],
    png16_hu_offset: float,
    cache_dir: Path | None,
    progress: bool = True,
) -> DecodedSet:
    """Decode and resize every file, from the cache when the same files were seen before."""
    file_hashes = [sha256_file(p) for p in paths]
    key = _cache_key(file_hashes, image_size, windows, png16_hu_offset)
    if cache_dir is not None:
        cached = _load(Path(cache_dir), key, file_hashes)
        if cached is not None:
            return cached
    decoded = _decode(paths, file_hashes, image_size, windows, png16_hu_offset, progress)
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
) -> DecodedSet:
    channels = len(windows)
    images: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[tuple[int, str]] = []
    pixel_hashes: list[str | None] = []
    for index, path in enumerate(tqdm(paths, desc="decode", disable=not progress, leave=False)):
        try:
            pixels = read_slice(path, windows=windows, png16_hu_offset=png16_hu_offset).pixels
        except UnreadableImage as exc:
            bad.append((index, str(exc)))
            pixel_hashes.append(None)
            continue
        pixel_hashes.append(hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest())
        images.append(network_pixels(pixels, channels, image_size))
        kept.append(index)
    stacked = (
        np.stack(images) if images else np.zeros((0, image_size, image_size, channels), np.uint8)
    )
    return DecodedSet(stacked, kept, bad, file_hashes, pixel_hashes)


def _cache_key(
    file_hashes: list[str],
    image_size: int,
    windows: tuple[tuple[float, float], ...],
    png16_hu_offset: float,
) -> str:
    spec = json.dumps(
        [CACHE_VERSION, image_size, [list(w) for w in windows], png16_hu_offset, file_hashes]
    )
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
    if len(meta["kept"]) != images.shape[0]:
        return None
    return DecodedSet(
        images=images,
        kept=meta["kept"],
        bad=[tuple(b) for b in meta["bad"]],
        file_hashes=file_hashes,
        pixel_hashes=meta["pixel_hashes"],
    )


def _save(cache_dir: Path, key: str, decoded: DecodedSet) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{key}.tmp.npy"
    np.save(tmp, decoded.images)
    meta = {"kept": decoded.kept, "bad": decoded.bad, "pixel_hashes": decoded.pixel_hashes}
    (cache_dir / f"{key}.json").write_text(json.dumps(meta))
    tmp.replace(cache_dir / f"{key}.npy")  # the array appears only when complete
