"""ml.explain.lesion: a lesion mask carried into the network's frame lands on the lesion, and the
two figures (peak inside, heat inside) are what they say."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from ml.data.cache import network_frame
from ml.data.dataset import SliceRecord
from ml.data.masks import lesion_region, mask_in_frame
from ml.data.synth import BRAIN_WINDOW, phantom_patient, window_to_uint8
from ml.evaluate.model_card import cam_lines
from ml.explain.cam import LAYERS
from ml.explain.lesion import cam_in_lesion, ceiling, hit
from ml.models.network import StrokeNet


def test_the_mask_lands_on_the_lesion_after_the_head_crop(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    stack = phantom_patient(rng, n_slices=6, size=256, stroke=True)
    phantom = max(stack, key=lambda s: s.lesion_mask.sum())
    pixels = window_to_uint8(phantom.hu, *BRAIN_WINDOW)[..., None]
    # Off-centre in a larger field of view, so the crop and the padding both move it.
    canvas = np.zeros((320, 400, 1), np.uint8)
    canvas[40:296, 120:376] = pixels
    mask = np.zeros((320, 400), bool)
    mask[40:296, 120:376] = phantom.lesion_mask
    Image.fromarray(mask).save(tmp_path / "mask.png")
    network, frame = network_frame(canvas, 1, 96, crop_head=True)
    inside = mask_in_frame(tmp_path / "mask.png", frame, 96)
    assert inside.any()
    grey = network[..., 0].astype(float)
    ring = np.zeros_like(inside)
    rows, cols = np.nonzero(inside)
    ring[max(0, rows.min() - 6) : rows.max() + 7, max(0, cols.min() - 6) : cols.max() + 7] = True
    ring &= ~inside
    assert grey[inside].mean() > grey[ring].mean() + 10  # a bleed is brighter than around it


def test_the_figures_of_a_heat_map_against_a_mask() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True
    heat = np.zeros((10, 10), np.float32)
    heat[3, 3], heat[8, 8] = 1.0, 0.5
    peak, inside = hit(heat, mask)
    assert peak is True and inside == pytest.approx(1.0 / 1.5)
    heat[8, 8] = 2.0
    assert hit(heat, mask)[0] is False
    assert hit(np.zeros((10, 10), np.float32), mask) == (False, 0.0)


def test_a_perfect_map_on_a_coarse_grid_misses_a_small_lesion() -> None:
    """The ceiling: the mask itself, averaged to a grid and drawn bilinearly, as a CAM is."""
    mask = np.zeros((64, 64), bool)
    mask[18:22, 34:38] = True  # 4 x 4 px, off its cell's centre (24, 40) on a 4 x 4 grid
    assert not ceiling(mask, (4, 4))  # cells of 16 px: the peak lands outside it
    assert ceiling(mask, (16, 16))  # cells of 4 px
    large = np.zeros((64, 64), bool)
    large[8:40, 8:40] = True
    assert ceiling(large, (4, 4))  # larger than a cell: the peak is inside


def test_an_outlined_lesion_is_filled() -> None:
    """PHE-SICH's masks are drawn outlines, often open: the lesion is the area they enclose."""
    yy, xx = np.mgrid[:128, :128]
    radius = np.hypot(yy - 64, xx - 60)
    disk = radius <= 20
    ring = (radius >= 19) & (radius <= 21)
    open_arc = ring & ~((xx > 70) & (yy > 60))  # a quarter of the outline missing
    dashed = ring & ((np.arctan2(yy - 64, xx - 60) * 20).astype(int) % 3 != 0)  # gaps of 2-3 px
    for outline in (ring, open_arc, dashed):
        region = lesion_region(outline)
        assert region[64, 60]  # the centre is inside the lesion
        assert (region & disk).sum() >= 0.85 * disk.sum()
        assert not (region & (radius > 22)).any()  # nothing beyond the outline
    filled = lesion_region(disk)  # a filled mask stays as it is, give or take its edge
    assert (filled >= disk).all() and (filled & ~disk).sum() <= 0.05 * disk.sum()
    two = ring | np.roll(ring, 50, axis=0)  # two lesions stay two
    assert not lesion_region(two)[64 + 25, 60]
    assert not lesion_region(np.zeros((8, 8), bool)).any()


def test_every_layer_is_measured_out_of_fold_and_on_held_out_patients(tmp_path: Path) -> None:
    """Two fold models, slices of folds 1 and 2 and of the holdout (part 0): each part's lesion
    slices are counted where they belong, at every layer, and the bundle's layer is named."""
    size, frame = 64, (1.0, 0.0, 0.0)
    mask = np.zeros((size, size), bool)
    mask[20:40, 20:40] = True
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, size, size, 3), dtype=np.uint8)
    records = [
        SliceRecord(
            tmp_path / f"{i}.png",
            f"{i}.png",
            1,
            "Stroke",
            str(i),
            slice_known=True,
            source="site",
            mask=tmp_path / "mask.png",
        )
        for i in range(5)
    ]
    records[4] = dataclasses.replace(records[4], label=0)  # no lesion: not counted
    parts = np.array([1, 2, 0, 0, 0])
    torch.manual_seed(0)
    models = {
        fold: StrokeNet(timm.create_model("test_efficientnet", num_classes=0), 8).eval()
        for fold in (1, 2)
    }
    figures = cam_in_lesion(
        models,
        images,
        records,
        parts,
        np.array([frame] * 5),
        in_chans=3,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        limit=10,
        layer="stride16",
    )
    assert figures is not None and figures["layer"] == "stride16"
    drawable = ("last", "stride16")  # not `map`: these models have no lesion-map head
    assert set(figures["by_layer"]) == set(drawable) and set(drawable) < set(LAYERS)
    assert figures["by_source"] == figures["by_layer"]["stride16"]
    assert figures["by_source"]["site"]["slices"] == 2
    held_out = figures["holdout"]["by_layer"]
    assert {layer: f["site"]["slices"] for layer, f in held_out.items()} == {
        layer: 2 for layer in drawable
    }
    assert held_out["last"]["site"]["lesion_area"] == pytest.approx(mask.mean())
    # Each layer's grid, and the most a map on it could reach on these slices.
    assert figures["by_layer"]["stride16"]["site"]["grid"] == [4, 4]
    assert figures["by_layer"]["last"]["site"]["grid"] == [2, 2]
    assert figures["by_layer"]["stride16"]["site"]["peak_in_lesion_ceiling"] == 1.0
    assert figures["by_layer"]["last"]["site"]["peak_in_lesion_ceiling"] == 0.0
    no_holdout = cam_in_lesion(
        models,
        images,
        records,
        np.array([1, 2, 1, 2, 1]),
        np.array([frame] * 5),
        in_chans=3,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        limit=10,
    )
    assert no_holdout is not None and "holdout" not in no_holdout
    assert no_holdout["by_source"]["site"]["slices"] == 4


def test_the_card_gives_each_figure_its_ceiling_and_old_runs_their_figure() -> None:
    figures = {
        "slices": 300,
        "peak_in_lesion": 0.257,
        "peak_in_lesion_ci95": [0.211, 0.309],
        "heat_inside": 0.053,
        "lesion_area": 0.01,
    }
    newer = {**figures, "peak_in_lesion_ceiling": 0.583, "grid": [12, 12]}
    old_line = cam_lines({"layer": "stride16", "by_source": {"site": figures}})[0]
    new_line = cam_lines({"layer": "stride16", "by_source": {"site": newer}})[0]
    assert "25.7% (21.1–30.9%)" in old_line and "perfect map" not in old_line
    assert new_line.startswith(old_line)
    assert new_line.endswith("a perfect map on this 12 x 12 grid would reach 58.3%")
