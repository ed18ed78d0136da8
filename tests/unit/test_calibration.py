"""ml.metrics.calibration: temperature and Platt fits, honest cross-fitting, ECE, Brier,
reliability."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit

from ml.metrics import calibration


def _over_confident(n: int, seed: int, *, sharpen: float = 3.0, shift: float = 0.0):
    """Labels drawn from sigmoid(true logit); the model reports sigmoid(sharpen * logit + shift)."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 1.5, size=n)
    y = (rng.random(n) < expit(true_logit)).astype(int)
    return y, expit(sharpen * true_logit + shift)


def test_temperature_recovers_the_sharpening() -> None:
    y, p = _over_confident(4000, seed=0, sharpen=3.0)
    calibrator = calibration.fit(y, p, "temperature")
    assert calibrator.method == "temperature"
    assert calibrator.a == pytest.approx(1 / 3, abs=0.04)
    assert calibrator.b == 0.0


def test_temperature_improves_held_out_ece_and_brier() -> None:
    y_fit, p_fit = _over_confident(3000, seed=1)
    y_new, p_new = _over_confident(3000, seed=2)
    calibrated = calibration.fit(y_fit, p_fit, "temperature").apply(p_new)
    assert calibration.ece(y_new, calibrated) < 0.5 * calibration.ece(y_new, p_new)
    assert calibration.brier(y_new, calibrated) < calibration.brier(y_new, p_new)


def test_platt_recovers_a_shift() -> None:
    y, p = _over_confident(4000, seed=3, sharpen=1.0, shift=1.5)  # calls stroke too often
    calibrator = calibration.fit(y, p, "platt")
    assert calibrator.a == pytest.approx(1.0, abs=0.12)
    assert calibrator.b == pytest.approx(-1.5, abs=0.15)


def test_none_is_the_identity() -> None:
    y, p = _over_confident(200, seed=4)
    calibrator = calibration.fit(y, p, "none")
    assert calibrator == calibration.Calibrator("none")
    np.testing.assert_array_equal(calibrator.apply(p), p)


def test_apply_clips_before_the_logit() -> None:
    calibrated = calibration.Calibrator("platt", a=2.0, b=0.5).apply([0.0, 0.5, 1.0])
    assert np.isfinite(calibrated).all()
    assert calibrated[1] == pytest.approx(expit(0.5))


def test_calibrator_round_trips_through_json() -> None:
    calibrator = calibration.Calibrator("platt", a=0.7, b=-0.2)
    again = calibration.Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert again == calibrator


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "isotonic"}, "none, temperature, platt"),
        ({"method": "temperature", "a": -1.0}, "a > 0"),
        ({"method": "temperature", "a": 1.0, "b": 0.3}, "b = 0"),
        ({"method": "none", "a": 2.0}, "no parameters"),
    ],
)
def test_invalid_calibrators_are_rejected(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibration.Calibrator.from_dict(fields)


def test_fit_rejects_scores_that_are_not_probabilities() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        calibration.fit([0, 1], [-0.5, 2.0], "platt")


def test_cross_fit_calibrates_each_fold_with_the_other_folds_only() -> None:
    y, p = _over_confident(1000, seed=5)
    folds = np.arange(len(y)) % 4
    out = calibration.cross_fit(y, p, folds, "platt")
    for fold in range(4):
        held_out = folds == fold
        expected = calibration.fit(y[~held_out], p[~held_out], "platt").apply(p[held_out])
        np.testing.assert_allclose(out[held_out], expected)


def test_cross_fit_never_uses_a_folds_own_labels() -> None:
    y, p = _over_confident(1000, seed=6)
    folds = np.arange(len(y)) % 4
    before = calibration.cross_fit(y, p, folds, "temperature")
    flipped = y.copy()
    flipped[folds == 1] = 1 - flipped[folds == 1]
    after = calibration.cross_fit(flipped, p, folds, "temperature")
    np.testing.assert_array_equal(after[folds == 1], before[folds == 1])
    assert not np.allclose(after[folds != 1], before[folds != 1])  # the labels do matter elsewhere


def test_cross_fit_needs_two_folds() -> None:
    with pytest.raises(ValueError, match="two folds"):
        calibration.cross_fit([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9], [1, 1, 1, 1], "platt")


def test_ece_of_calibrated_scores_is_small_and_of_miscalibrated_large() -> None:
    rng = np.random.default_rng(7)
    p = rng.random(20000)
    y = (rng.random(p.size) < p).astype(int)
    assert calibration.ece(y, p) < 0.02
    assert calibration.ece(y, np.clip(p + 0.2, 0.0, 1.0)) > 0.15


def test_ece_and_brier_hand_values() -> None:
    y = [0, 1, 1, 1]
    p = [0.05, 0.05, 0.95, 0.95]
    # bin [0, 0.1): mean score 0.05, half positive -> gap 0.45; bin [0.9, 1]: 0.95 vs 1 -> 0.05
    assert calibration.ece(y, p) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert calibration.brier(y, p) == pytest.approx((0.05**2 + 0.95**2 + 2 * 0.05**2) / 4)


def test_reliability_bins_cover_every_slice() -> None:
    y, p = _over_confident(500, seed=8)
    p = np.append(p, [0.0, 1.0])  # both ends of the range land in a bin
    y = np.append(y, [0, 1])
    table = calibration.reliability(y, p, n_bins=10)
    assert sum(table["count"]) == len(y)
    assert table["bin_edges"] == pytest.approx(np.linspace(0, 1, 11).tolist())
    assert len(table["mean_predicted"]) == len(table["fraction_positive"]) == 10


def test_reliability_marks_empty_bins() -> None:
    table = calibration.reliability([0, 1], [0.05, 0.95], n_bins=4)
    assert table["count"] == [1, 0, 0, 1]
    assert table["mean_predicted"] == [pytest.approx(0.05), None, None, pytest.approx(0.95)]
    assert table["fraction_positive"] == [0.0, None, None, 1.0]


def test_calibration_report_scores_after_on_cross_fitted_data() -> None:
    y, p = _over_confident(2000, seed=9)
    folds = np.arange(len(y)) % 5
    report = calibration.calibration_report(y, p, folds, "temperature")
    assert report["fitted_on"] == "out-of-fold predictions"
    assert report["evaluated_on"] == "cross-fitted over folds"
    crossed = calibration.cross_fit(y, p, folds, "temperature")
    assert report["after"]["ece"] == pytest.approx(calibration.ece(y, crossed))
    assert report["after"]["brier"] == pytest.approx(calibration.brier(y, crossed))
    in_sample = calibration.fit(y, p, "temperature")
    assert report["calibrator"] == in_sample.to_dict()
    assert report["after"]["ece"] != pytest.approx(calibration.ece(y, in_sample.apply(p)))
    assert report["after"]["ece"] < report["before"]["ece"]
    assert report["before"]["ece"] == pytest.approx(calibration.ece(y, p))
    json.dumps(report)  # ready for metrics.json
