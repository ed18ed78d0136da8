"""2.5D input: neighbours within a patient, in training and in every prediction path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ml.config import make_config
from ml.context import neighbour_rows, network_images, stack_neighbours
from ml.data import load_dataset, slice_order


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


def test_neighbours_need_three_channels_and_one_window() -> None:
    with pytest.raises(ValueError, match="neighbours needs in_chans=3"):
        make_config("test", input_mode="neighbours", in_chans=1)
    with pytest.raises(ValueError, match="is not one of"):
        make_config("test", input_mode="volume")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_study_scored_slice_by_slice_reproduces_the_oof_probabilities(
    neighbour_bundle: Path, phantom_data: Path
) -> None:
    from ml.infer import Predictor

    rows = _rows(neighbour_bundle / "oof.csv")
    cfg = make_config("test")
    records = load_dataset(phantom_data, cfg.class_map, cfg.patient_regex).records
    row = next(r for r in rows if r["fold"] == "2")
    patient = sorted((r for r in records if r.patient_id == row["patient_id"]), key=slice_order)
    paths = [r.path for r in patient]
    predictor = Predictor.from_bundle(neighbour_bundle, backend="torch", folds=[2])
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
    from ml.evaluate import evaluate_bundle

    evaluate_bundle(
        neighbour_bundle, data=phantom_data, holdout=True, out=tmp_path, backend="torch"
    )
    stored = {r["path"]: float(r["probability"]) for r in _rows(neighbour_bundle / "holdout.csv")}
    again = {r["path"]: float(r["probability"]) for r in _rows(tmp_path / "predictions.csv")}
    assert set(again) == set(stored) and len(stored) >= 4
    for path, probability in stored.items():
        assert again[path] == pytest.approx(probability, abs=1e-5)
