"""The heat map lands where it belongs on the stored slice: a phantom with a known lesion, off
centre on a wide canvas, under a bundle that crops to the head, shown at its own size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask

from ml.data.synth import AIR_HU, phantom_patient, write_ct_dicom
from tests.e2e.conftest import HEAT_MAP_LOADED, make_live_app, result_url, wait_until

pytestmark = pytest.mark.slow

CANVAS = (120, 200)  # rows, columns: wider than tall, so the network's square is padded
HEAD_AT = (14, 92)  # where the 96 px phantom sits on it: off centre, so the crop matters
PHANTOM_SIZE = 96


@pytest.fixture(scope="module")
def live_app(neighbour_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """The app on a bundle with `crop_head` on: the network sees a crop of the head."""
    return make_live_app(neighbour_bundle, tmp_path_factory.mktemp("live-crop"))


def phantom_pair(folder: Path) -> tuple[bytes, bytes, tuple[float, float]]:
    """DICOMs of one slice with a lesion and of the same slice without it (same anatomy and
    noise), and the lesion's centre (x, y) in the stored image's pixels."""
    slices = {
        stroke: phantom_patient(
            np.random.default_rng(7), n_slices=4, size=PHANTOM_SIZE, stroke=stroke
        )
        for stroke in (True, False)
    }
    index = max(range(4), key=lambda i: slices[True][i].lesion_mask.sum())
    files, top, left = [], *HEAD_AT
    for stroke in (True, False):
        hu = np.full(CANVAS, AIR_HU, dtype=np.float32)
        hu[top : top + PHANTOM_SIZE, left : left + PHANTOM_SIZE] = slices[stroke][index].hu
        path = folder / f"{'lesion' if stroke else 'twin'}.dcm"
        write_ct_dicom(path, hu, patient_id="P1", instance_number=1)
        files.append(path.read_bytes())
    rows, columns = np.nonzero(slices[True][index].lesion_mask)
    return files[0], files[1], (left + columns.mean(), top + rows.mean())


def test_the_heat_map_peak_lands_on_the_lesion(
    page, base_url, live_app, tmp_path, monkeypatch
) -> None:
    from ml.infer.predictor import Predictor

    lesion, twin, (lesion_x, lesion_y) = phantom_pair(tmp_path)
    (tmp_path / "twin-source.dcm").write_bytes(twin)
    made: dict[str, np.ndarray] = {}
    real = Predictor.explain

    def explain_at_the_lesion(self, source, **kwargs):
        """The real explanation, with its map replaced by one that peaks on the lesion as the
        network sees it: where the slice differs from its lesion-free twin, in network pixels."""
        explanation = real(self, source, **kwargs)
        seen, without = self.prepare(source), self.prepare(tmp_path / "twin-source.dcm")
        difference = np.abs(seen.windowed[..., 0].astype(float) - without.windowed[..., 0])
        heat = cv2.GaussianBlur(difference, (0, 0), 1.0)
        made["heat"] = (heat / heat.max()).astype(np.float32)
        return dataclasses.replace(explanation, heatmap=made["heat"])

    monkeypatch.setattr(Predictor, "explain", explain_at_the_lesion)
    path = result_url(live_app, [(lesion, "lesion.dcm")])
    page.goto(base_url + path)
    wait_until(page, HEAT_MAP_LOADED)
    page.shots("overlay-on-the-lesion")

    rect = "e => e.getBoundingClientRect().toJSON()"
    slice_box = page.eval_on_selector("#slice-image", rect)
    cam_box = page.eval_on_selector("#cam-image", rect)
    assert page.eval_on_selector("#slice-image", "e => [e.naturalWidth, e.naturalHeight]") == [
        CANVAS[1],
        CANVAS[0],
    ]  # the stored image at its own size
    size = made["heat"].shape[0]
    peak_row, peak_col = np.unravel_index(np.argmax(made["heat"]), made["heat"].shape)
    peak = (
        cam_box["left"] + (peak_col + 0.5) / size * cam_box["width"],
        cam_box["top"] + (peak_row + 0.5) / size * cam_box["height"],
    )
    on_slice = (
        slice_box["left"] + (lesion_x + 0.5) / CANVAS[1] * slice_box["width"],
        slice_box["top"] + (lesion_y + 0.5) / CANVAS[0] * slice_box["height"],
    )
    network_pixel = cam_box["width"] / size  # screen pixels per pixel of the heat map
    error = float(np.hypot(peak[0] - on_slice[0], peak[1] - on_slice[1]))
    assert error <= 1.5 * network_pixel, f"peak {error:.1f} px from the lesion"
    print(
        f"heat map peak {error:.1f} screen px from the lesion ({network_pixel:.1f} px a map pixel)"
    )
    # Laid over the whole slice instead (the old page), the peak would miss by far.
    naive = (
        slice_box["left"] + (peak_col + 0.5) / size * slice_box["width"],
        slice_box["top"] + (peak_row + 0.5) / size * slice_box["height"],
    )
    assert np.hypot(naive[0] - on_slice[0], naive[1] - on_slice[1]) > 5 * network_pixel
