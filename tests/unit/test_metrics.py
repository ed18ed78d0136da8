"""ml.metrics.scores: counts, Wilson intervals, study aggregation and patient-resampled
intervals."""

from __future__ import annotations

import numpy as np
import pytest

from ml.metrics import scores as metrics


def test_at_threshold_counts_and_rates() -> None:
    y = [1, 1, 1, 0, 0, 0, 0]
    p = [0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05]
    out = metrics.at_threshold(y, p, 0.5)
    assert (out["tp"], out["fn"], out["fp"], out["tn"]) == (2, 1, 1, 3)
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] == pytest.approx(3 / 4)
    assert out["ppv"] == pytest.approx(2 / 3)
    assert out["npv"] == pytest.approx(3 / 4)
    assert out["accuracy"] == pytest.approx(5 / 7)
    assert out["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_rates_without_a_denominator_are_none() -> None:
    assert metrics.at_threshold([0, 0], [0.1, 0.2], 0.5)["sensitivity"] is None


def test_wilson_interval_hand_checked() -> None:
    # 8/10 at 95%: centre (0.8 + z^2/20) / (1 + z^2/10), z = 1.96
    low, high = metrics.wilson_ci(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_widens_with_the_level() -> None:
    low95, high95 = metrics.wilson_ci(8, 10)
    low99, high99 = metrics.wilson_ci(8, 10, level=0.99)
    assert low99 < low95 and high99 > high95


def test_wilson_interval_at_the_edges() -> None:
    assert metrics.wilson_ci(0, 0) is None
    low, high = metrics.wilson_ci(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35  # not the degenerate [0, 0] of the normal interval
    low, high = metrics.wilson_ci(10, 10)
    assert high == 1.0 and 0.65 < low < 0.8
    for successes in range(0, 31):
        low, high = metrics.wilson_ci(successes, 30)
        assert 0.0 <= low <= successes / 30 <= high <= 1.0


@pytest.mark.parametrize(("successes", "n"), [(11, 10), (-1, 10), (0, -1)])
def test_wilson_interval_rejects_impossible_counts(successes: int, n: int) -> None:
    with pytest.raises(ValueError, match="successes <= n"):
        metrics.wilson_ci(successes, n)


def test_aucs_against_known_values() -> None:
    y = [0, 0, 1, 1]
    assert metrics.roc_auc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.pr_auc(y, [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("bad_y", "bad_p", "message"),
    [
        ([0, 1], [0.5], "equal length"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([1, 1], [0.1, 0.2], "both classes"),
    ],
)
def test_inputs_are_validated(bad_y, bad_p, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.roc_auc(bad_y, bad_p)


def test_study_aggregations() -> None:
    scores = [0.1, 0.2, 0.9, 0.5]
    assert metrics.aggregate(scores, "mean") == pytest.approx(0.425)
    assert metrics.aggregate(scores, "max") == pytest.approx(0.9)
    assert metrics.aggregate(scores, "topk_mean", k=2) == pytest.approx(0.7)
    assert metrics.aggregate(scores, "noisy_or") == pytest.approx(1 - 0.9 * 0.8 * 0.1 * 0.5)
    with pytest.raises(ValueError, match="noisy_or"):
        metrics.aggregate(scores, "median")


def test_patient_scores_group_slices() -> None:
    patients, labels, scores = metrics.patient_scores(
        ["b", "a", "b", "a"], [1, 0, 1, 0], [0.8, 0.2, 0.6, 0.4], "mean"
    )
    assert patients == ["a", "b"]
    assert labels.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.3, 0.7])


def test_bootstrap_resamples_patients_not_slices() -> None:
    rng = np.random.default_rng(0)
    y, p, groups = [], [], []
    for patient in range(20):
        label = patient % 2
        score = rng.normal(0.5 + 0.15 * label, 0.2)
        for _ in range(30):  # 30 copies of one patient's score: one piece of evidence, not 30
            y.append(label)
            p.append(score)
            groups.append(str(patient))
    by_patient = metrics.bootstrap_ci(y, p, groups, n_resamples=400, seed=1)
    by_slice = metrics.bootstrap_ci(y, p, [str(i) for i in range(len(y))], n_resamples=400, seed=1)
    point = metrics.roc_auc(y, p)
    assert by_patient[0] <= point <= by_patient[1]
    assert (by_patient[1] - by_patient[0]) > 2 * (by_slice[1] - by_slice[0])


def test_roc_auc_is_scikit_learns_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    for size in (2, 7, 300):
        y = rng.integers(0, 2, size)
        y[:2] = (0, 1)
        for scores in (rng.random(size), rng.integers(0, 4, size) / 4):  # the second full of ties
            assert metrics.roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == 0.5
