"""ml.data.headct: the check that a slice looks like an axial head CT at all.

It must never fire on the phantoms (every size and format `ml synth` writes) and must fire on
inputs that are plainly something else. Real CT slices are measured by
benchmarks/bench_head_check.py (figures in benchmarks/RESULTS.md); tests use generated images only.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.data.headct import NOT_HEAD_CT, check_head_ct
from ml.data.readers import read_slice
from ml.data.synth import write_dataset


def _decoded(pixels: np.ndarray, fmt: str = "PNG") -> np.ndarray:
    """The pixels as an upload of them decodes (colour becomes grey, JPEG adds its noise)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
    return read_slice(buffer.getvalue()).pixels


def _photograph(seed: int) -> np.ndarray:
    """A colour picture like an outdoor photograph: sky, hills, a textured meadow, sensor noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:300, 0:400]
    image = np.zeros((300, 400, 3))
    image[:] = np.array([80, 140, 220]) + (ys / 300)[..., None] * np.array([100, 70, 20])
    hills = ys > 150 + 30 * np.sin(xs / 60 + seed)
    image[hills] = np.array([70, 120, 60]) * rng.uniform(0.6, 1.3, (int(hills.sum()), 1))
    image += rng.normal(0, 5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


RAMP = np.linspace(0, 255, 256).astype(np.uint8)


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512])
def test_never_fires_on_phantoms_of_any_size_or_format(tmp_path: Path, size: int) -> None:
    write_dataset(tmp_path, patients=4, slices_per_patient=6, size=size, fmt="both", seed=size)
    files = sorted(tmp_path.rglob("*.png")) + sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 2 * 4 * 6
    fired = [f.name for f in files if not check_head_ct(read_slice(f).pixels).plausible]
    assert fired == []


@pytest.mark.parametrize("level", [0, 128, 255])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_blank_image_is_not_a_head_ct(level: int, fmt: str) -> None:
    check = check_head_ct(_decoded(np.full((256, 256), level, np.uint8), fmt))
    assert not check.plausible
    assert "blank" in check.problem
    assert check.warning.startswith(NOT_HEAD_CT)
    assert check.measures["content_share"] < 0.001


def test_the_8000_pixel_black_image_is_blank() -> None:
    check = check_head_ct(_decoded(np.zeros((8000, 8000), np.uint8)))
    assert not check.plausible and "blank" in check.problem


def test_a_few_specks_on_black_are_still_blank() -> None:
    pixels = np.zeros((512, 512), np.uint8)
    pixels[100:104, 200:204] = 255  # 16 of 262,144 pixels
    assert not check_head_ct(pixels).plausible


@pytest.mark.parametrize(
    ("name", "pixels"),
    [
        ("uniform noise", np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)),
        ("horizontal gradient", np.tile(RAMP, (256, 1))),
        ("vertical gradient", np.tile(RAMP[:, None], (1, 256))),
        ("photograph", _photograph(0)),
        ("another photograph", _photograph(1)),
    ],
)  # fmt: skip
def test_images_without_air_around_them_are_not_a_head_ct(name: str, pixels: np.ndarray) -> None:
    check = check_head_ct(_decoded(pixels, "JPEG" if pixels.ndim == 3 else "PNG"))
    assert not check.plausible, name
    assert "edge pixels are dark" in check.problem
    assert check.measures["dark_edge_share"] < 0.5


def test_a_head_ct_passes_and_says_nothing(tmp_path: Path) -> None:
    write_dataset(tmp_path, patients=2, slices_per_patient=1, size=64, seed=3)
    check = check_head_ct(read_slice(next(tmp_path.rglob("*.png"))).pixels)
    assert check.plausible and check.problem is None and check.warning is None
    assert check.measures["dark_edge_share"] == 1.0


def test_several_windows_are_judged_by_the_first(tmp_path: Path) -> None:
    """A bundle with several windows decodes several channels; the check reads the first."""
    blank_first = np.zeros((64, 64, 3), np.uint8)
    blank_first[..., 1:] = np.random.default_rng(0).integers(0, 256, (64, 64, 2))
    assert not check_head_ct(blank_first).plausible
    assert "blank" in check_head_ct(blank_first).problem
