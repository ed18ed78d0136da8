"""ml.metrics.thresholds: operating-point policies, thresholds.json and the uncertainty band."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.metrics import scores as metrics
from ml.metrics import thresholds

# Eight slices, one per score; strokes at 0.2, 0.4, 0.6, 0.7, 0.8 and normals at 0.1, 0.3, 0.5.
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
LABELS = [0, 1, 0, 1, 0, 1, 1, 1]


def _random_scores(seed: int, n: int = 300, decimals: int | None = 2):
    """Overlapping classes; rounding makes tied scores, where an off-by-one would show."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    return y, (np.round(p, decimals) if decimals is not None else p)


def test_youden_picks_the_separating_threshold() -> None:
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.35, 0.4, 0.8, 0.9]
    threshold = thresholds.choose_threshold(y, p, "youden")
    assert threshold == pytest.approx(0.4)
    assert metrics.at_threshold(y, p, threshold)["accuracy"] == 1.0


def test_max_f1_threshold() -> None:
    y = [0, 1, 0, 1, 1]
    p = [0.1, 0.3, 0.4, 0.6, 0.9]
    threshold = thresholds.choose_threshold(y, p, "max_f1")
    assert threshold == pytest.approx(0.3)  # all three strokes caught, one false alarm: F1 0.857


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_max_f1_matches_a_brute_force_loop(seed: int) -> None:
    y, p = _random_scores(seed)
    candidates = np.unique(p)
    f1 = [metrics.at_threshold(y, p, t)["f1"] or 0.0 for t in candidates]
    expected = candidates[int(np.argmax(f1))]  # the first best: the lowest of tied thresholds
    assert thresholds.choose_threshold(y, p, "max_f1") == expected


@pytest.mark.parametrize(("target", "expected"), [(1.0, 0.2), (0.8, 0.4), (0.6, 0.6), (0.2, 0.8)])
def test_sensitivity_at_hand_example(target: float, expected: float) -> None:
    # sensitivity by threshold: 0.2 -> 5/5, 0.4 -> 4/5, 0.6 -> 3/5, 0.7 -> 2/5, 0.8 -> 1/5
    threshold = thresholds.choose_threshold(LABELS, SCORES, "sensitivity_at", target=target)
    assert threshold == pytest.approx(expected)


@pytest.mark.parametrize(("target", "expected"), [(0.3, 0.2), (0.6, 0.4), (1.0, 0.6)])
def test_specificity_at_hand_example(target: float, expected: float) -> None:
    # specificity by threshold: 0.1 -> 0/3, 0.2 -> 1/3, 0.4 -> 2/3, 0.6 -> 3/3
    threshold = thresholds.choose_threshold(LABELS, SCORES, "specificity_at", target=target)
    assert threshold == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_sensitivity_at_is_the_highest_threshold_meeting_the_target(seed: int, target: float):
    y, p = _random_scores(seed)
    threshold = thresholds.choose_threshold(y, p, "sensitivity_at", target=target)
    assert metrics.at_threshold(y, p, threshold)["sensitivity"] >= target
    higher = np.unique(p[p > threshold])
    assert all(metrics.at_threshold(y, p, t)["sensitivity"] < target for t in higher)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_specificity_at_is_the_lowest_threshold_meeting_the_target(seed: int, target: float):
    y, p = _random_scores(seed)
    threshold = thresholds.choose_threshold(y, p, "specificity_at", target=target)
    assert metrics.at_threshold(y, p, threshold)["specificity"] >= target
    lower = np.unique(p[p < threshold])
    assert all(metrics.at_threshold(y, p, t)["specificity"] < target for t in lower)


def test_specificity_one_can_mean_calling_nothing_stroke() -> None:
    y, p = [1, 0], [0.2, 0.9]  # the highest score is a normal slice
    threshold = thresholds.choose_threshold(y, p, "specificity_at", target=1.0)
    assert threshold > 0.9
    counts = metrics.at_threshold(y, p, threshold)
    assert counts["tp"] + counts["fp"] == 0


@pytest.mark.parametrize(("cost_ratio", "expected"), [(1.0, 0.6), (5.0, 0.2), (0.1, 0.6)])
def test_min_cost_hand_example(cost_ratio: float, expected: float) -> None:
    # cost r*FN + FP by threshold: 0.1 -> 3, 0.2 -> 2, 0.3 -> r+2, 0.4 -> r+1, 0.5 -> 2r+1,
    # 0.6 -> 2r, 0.7 -> 3r, 0.8 -> 4r, above all -> 5r. At r = 1 the costs at 0.2, 0.4 and 0.6
    # tie at 2, and the tie goes to the higher threshold.
    threshold = thresholds.choose_threshold(LABELS, SCORES, "min_cost", cost_ratio=cost_ratio)
    assert threshold == pytest.approx(expected)


def test_min_cost_can_call_nothing_stroke() -> None:
    y, p = [0, 0, 0, 1], [0.7, 0.8, 0.9, 0.1]  # the one stroke scores lowest
    threshold = thresholds.choose_threshold(y, p, "min_cost", cost_ratio=1.0)
    assert threshold > 0.9
    assert thresholds.expected_cost(y, p, threshold, cost_ratio=1.0) == pytest.approx(0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_cost_is_the_brute_force_minimum(seed: int) -> None:
    y, p = _random_scores(seed)
    candidates = [*np.unique(p), 1.01]
    costs = [thresholds.expected_cost(y, p, t, cost_ratio=3.0) for t in candidates]
    threshold = thresholds.choose_threshold(y, p, "min_cost", cost_ratio=3.0)
    assert thresholds.expected_cost(y, p, threshold, cost_ratio=3.0) == pytest.approx(min(costs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_cost_threshold_falls_as_missed_strokes_cost_more(seed: int) -> None:
    y, p = _random_scores(seed)
    chosen = [
        thresholds.choose_threshold(y, p, "min_cost", cost_ratio=r) for r in (0.2, 1, 3, 10, 50)
    ]
    assert chosen == sorted(chosen, reverse=True)
    assert chosen[-1] < chosen[0]


@pytest.mark.parametrize(
    ("policy", "options", "message"),
    [
        ("median", {}, "max_f1, youden, sensitivity_at, specificity_at, min_cost"),
        ("sensitivity_at", {}, "needs a target"),
        ("specificity_at", {"target": 1.5}, r"\(0, 1\]"),
        ("min_cost", {}, "needs cost_ratio"),
        ("min_cost", {"cost_ratio": -1.0}, "positive"),
        ("youden", {"target": 0.9}, "takes no target"),
        ("max_f1", {"cost_ratio": 2.0}, "takes no cost_ratio"),
    ],
)
def test_bad_policies_and_options_are_rejected(policy: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        thresholds.choose_threshold(LABELS, SCORES, policy, **options)


@pytest.mark.parametrize(
    ("bad_y", "bad_p", "message"),
    [([0, 2], [0.1, 0.2], "0 or 1"), ([1, 1], [0.1, 0.2], "both classes")],
)
def test_inputs_are_validated(bad_y, bad_p, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        thresholds.choose_threshold(bad_y, bad_p, "youden")


def test_standard_points_cover_every_policy_in_order() -> None:
    y, p = _random_scores(0)
    points = thresholds.standard_points(y, p, cost_ratio=5.0)
    assert [point.policy for point in points] == list(thresholds.POLICIES)
    assert [point.name for point in points] == [
        "max_f1",
        "youden",
        "sensitivity_0.95",
        "specificity_0.90",
        "min_cost_5",
    ]
    for point in points:
        assert point.metrics == metrics.at_threshold(y, p, point.threshold)
    assert points[2].metrics["sensitivity"] >= 0.95
    assert points[3].metrics["specificity"] >= 0.90


def test_thresholds_json_round_trip(tmp_path: Path) -> None:
    y, p = _random_scores(1, decimals=None)
    points = thresholds.standard_points(y, p)
    path = tmp_path / "thresholds.json"
    thresholds.write_thresholds(path, points, "youden", extra={"model": "demo"})
    document = json.loads(path.read_text())
    assert document["level"] == "slice"
    assert document["chosen_on"] == "out-of-fold predictions"
    assert document["active"] == "youden"
    assert document["model"] == "demo"
    read_points, active = thresholds.read_thresholds(path)
    assert active == "youden"
    assert read_points == points  # thresholds survive JSON bit for bit


def test_read_thresholds_rejects_an_unknown_active_point(tmp_path: Path) -> None:
    points = thresholds.standard_points(LABELS, SCORES)
    path = tmp_path / "thresholds.json"
    thresholds.write_thresholds(path, points, "max_f1")
    document = json.loads(path.read_text())
    document["active"] = "sensitivity_0.99"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"sensitivity_0\.99"):
        thresholds.read_thresholds(path)


def test_write_thresholds_rejects_an_unknown_active_point(tmp_path: Path) -> None:
    points = thresholds.standard_points(LABELS, SCORES)
    with pytest.raises(ValueError, match="not one of"):
        thresholds.write_thresholds(tmp_path / "thresholds.json", points, "youdne")
    assert not (tmp_path / "thresholds.json").exists()


def _noisy_near_threshold(n: int = 2000, seed: int = 0):
    """Scores far from 0.5 are right; labels of scores within 0.1 of it are coin flips."""
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (p >= 0.5).astype(int)
    near = np.abs(p - 0.5) < 0.1
    y[near] = rng.integers(0, 2, size=int(near.sum()))
    return y, p


@pytest.mark.parametrize("share", [0.1, 0.2, 0.5])
def test_uncertainty_band_holds_the_requested_share(share: float) -> None:
    y, p = _noisy_near_threshold()
    band = thresholds.uncertainty_band(y, p, 0.5, share=share)
    assert band["n_inside"] == round(share * len(p))
    inside = np.abs(p - 0.5) <= band["half_width"]
    assert inside.sum() == band["n_inside"]
    assert np.abs(p[~inside] - 0.5).min() > np.abs(p[inside] - 0.5).max()  # the nearest ones


def test_uncertainty_band_is_where_the_model_errs() -> None:
    y, p = _noisy_near_threshold()
    band = thresholds.uncertainty_band(y, p, 0.5, share=0.2)
    assert band["half_width"] == pytest.approx(0.1, abs=0.01)  # read off the data, not fixed
    assert band["accuracy_inside"] < 0.7
    assert band["accuracy_outside"] == 1.0
    assert set(band) == {
        "threshold",
        "half_width",
        "share",
        "accuracy_inside",
        "accuracy_outside",
        "n_inside",
    }


def test_uncertainty_band_over_everything_has_no_outside() -> None:
    band = thresholds.uncertainty_band(LABELS, SCORES, 0.45, share=1.0)
    assert band["n_inside"] == len(SCORES)
    assert band["accuracy_outside"] is None
