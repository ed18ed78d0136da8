"""2.5D input: neighbours within a patient, in training and in every prediction path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ml.config import make_config
from ml.data.cache import head_box, network_frame
from ml.data.context import align, neighbour_rows, network_images, stack_neighbours
from ml.data.dataset import load_dataset, slice_order


def test_neighbours_stay_inside_a_patient_and_follow_slice_order() -> None:
    groups = ["b", "a", "b", "a", "b", "c"]
    order = [3, 2, 1, 1, 2, 7]  # b: rows 2, 4, 0; a: rows 3, 1; c: row 5 alone
    rows = neighbour_rows(groups, order)
    assert rows[:, 1].tolist() == list(range(6))
    assert rows[2].tolist() == [2, 2, 4]  # first of b: repeats itself before
    assert rows[4].tolist() == [2, 4, 0]
    assert rows[0].tolist() == [4, 0, 0]  # last of b: repeats itself after
    assert rows[3].tolist() == [3, 3, 1] and rows[1].tolist() == [3, 1, 1]
    assert rows[5].tolist() == [5, 5, 5]  # a lone slice is its own neighbours


def test_stacking_takes_the_first_channel_of_each_neighbour() -> None:
    images = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2, 1)
    stacked = stack_neighbours(images, np.array([[0, 1, 2], [3, 3, 3]]))
    assert stacked.shape == (2, 2, 2, 3)
    for j, row in enumerate((0, 1, 2)):
        assert np.array_equal(stacked[0, ..., j], images[row, ..., 0])
    assert np.array_equal(network_images(images, ["p"] * 4, [0] * 4, "slice"), images)
    with pytest.raises(ValueError, match="unknown input mode"):
        network_images(images, ["p"] * 4, [0] * 4, "volume")


def _head(radius: int, centre: tuple[int, int] = (260, 250)) -> np.ndarray:
    """A 512 x 512 slice: a bright disc with a darker spot at a fixed place (the lesion)."""
    yy, xx = np.mgrid[:512, :512]
    grey = np.zeros((512, 512), np.uint8)
    grey[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2] = 120
    grey[(yy - 230) ** 2 + (xx - 280) ** 2 < 12**2] = 60
    return grey[..., None]


def test_a_neighbour_is_redrawn_as_if_cut_with_the_middle_slice_box() -> None:
    # Near the top of the skull the head shrinks: cropped to its own box, the neighbour is
    # zoomed and shifted against the middle slice; aligned, it matches the neighbour cut with
    # the middle slice's box (what one box for both would have given).
    middle, neighbour = _head(200), _head(110, centre=(250, 265))
    image_m, frame_m = network_frame(middle, 1, 96, crop_head=True)
    image_n, frame_n = network_frame(neighbour, 1, 96, crop_head=True)
    assert frame_n[0] > 1.5 * frame_m[0]  # its own crop enlarged it
    top, bottom, left, right = head_box(middle[..., 0])
    truth = network_frame(neighbour[top:bottom, left:right], 1, 96)[0][..., 0].astype(float)
    aligned = align(image_n[..., 0], frame_n, frame_m).astype(float)
    assert np.abs(aligned - truth).mean() < 3.0
    assert np.abs(image_n[..., 0].astype(float) - truth).mean() > 20.0  # unaligned: far off
    assert np.array_equal(align(image_m[..., 0], frame_m, frame_m), image_m[..., 0])

    frames = np.array([frame_n, frame_m, frame_n])
    images = np.stack([image_n, image_m, image_n])
    rows = np.array([[0, 1, 2]])
    plain = network_images(images, ["p"] * 3, [0, 1, 2], "neighbours", frames)
    redrawn = network_images(images, ["p"] * 3, [0, 1, 2], "neighbours_aligned", frames)
    assert np.array_equal(plain[1], stack_neighbours(images, rows)[0])  # frames ignored
    assert np.array_equal(redrawn[1], stack_neighbours(images, rows, frames)[0])
    assert np.array_equal(redrawn[1, ..., 1], image_m[..., 0])  # the middle is untouched
    assert np.array_equal(redrawn[1, ..., 0], align(image_n[..., 0], frame_n, frame_m))
    with pytest.raises(ValueError, match="needs each slice's frame"):
        network_images(images, ["p"] * 3, [0, 1, 2], "neighbours_aligned")


def test_neighbours_need_three_channels_and_one_window() -> None:
    with pytest.raises(ValueError, match="neighbours needs in_chans=3"):
        make_config("test", input_mode="neighbours", in_chans=1)
    with pytest.raises(ValueError, match="neighbours_aligned needs in_chans=3"):
        make_config("test", input_mode="neighbours_aligned", in_chans=1)
    with pytest.raises(ValueError, match="is not one of"):
        make_config("test", input_mode="volume")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_study_scored_slice_by_slice_reproduces_the_oof_probabilities(
    neighbour_bundle: Path, phantom_data: Path
) -> None:
    from ml.infer.predictor import Predictor

    rows = _rows(neighbour_bundle / "oof.csv")
    cfg = make_config("test")
    records = load_dataset(phantom_data, cfg.class_map, cfg.patient_regex).records
    row = next(r for r in rows if r["fold"] == "2")
    patient = sorted((r for r in records if r.patient_id == row["patient_id"]), key=slice_order)
    paths = [r.path for r in patient]
    predictor = Predictor.from_bundle(neighbour_bundle, backend="torch", folds=[2])
    assert predictor.cfg.input_mode == "neighbours_aligned" and predictor.cfg.crop_head
    frames = {predictor.prepare(p).frame for p in paths}
    assert len(frames) > 1  # the crops differ, so the alignment is exercised
    stored = {r["path"]: float(r["probability"]) for r in rows}
    for index, record in enumerate(patient):
        [result] = predictor.predict_prepared([predictor.prepare_at(paths, index)])
        assert result.probability == pytest.approx(stored[record.rel_path], abs=1e-5)
    # The whole study at once gives the same slices; a slice alone is read without neighbours.
    study = predictor.predict_study(paths)
    assert [s.probability for s in study.slices] == pytest.approx(
        [stored[r.rel_path] for r in patient], abs=1e-5
    )
    middle = predictor.prepare_at(paths, 1).tensor
    alone = predictor.prepare(paths[1]).tensor
    assert not np.allclose(middle.numpy(), alone.numpy())
    assert np.allclose(middle[1].numpy(), alone[1].numpy())  # the centre channel is the slice
    assert predictor.prepare_at(paths[1:2], 0).tensor.equal(alone)


@pytest.mark.slow
def test_holdout_rescoring_rebuilds_the_neighbours(
    neighbour_bundle: Path, phantom_data: Path, tmp_path: Path
) -> None:
    from ml.evaluate.scoring import evaluate_bundle

    evaluate_bundle(
        neighbour_bundle, data=phantom_data, holdout=True, out=tmp_path, backend="torch"
    )
    stored = {r["path"]: float(r["probability"]) for r in _rows(neighbour_bundle / "holdout.csv")}
    again = {r["path"]: float(r["probability"]) for r in _rows(tmp_path / "predictions.csv")}
    assert set(again) == set(stored) and len(stored) >= 4
    for path, probability in stored.items():
        assert again[path] == pytest.approx(probability, abs=1e-5)


@pytest.mark.slow
def test_the_model_card_says_how_the_neighbours_were_fed(neighbour_bundle: Path) -> None:
    card = (neighbour_bundle / "model_card.md").read_text()
    assert "2.5D input" in card and "neighbours redrawn in its crop" in card
    assert "one slice per input" not in card
