"""ml.metrics: counts, operating points, study aggregation and patient-resampled intervals."""

from __future__ import annotations

import numpy as np
import pytest

from ml import metrics


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


def test_youden_picks_the_separating_threshold() -> None:
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.35, 0.4, 0.8, 0.9]
    threshold = metrics.choose_threshold(y, p, "youden")
    assert threshold == pytest.approx(0.4)
    assert metrics.at_threshold(y, p, threshold)["accuracy"] == 1.0


def test_max_f1_threshold() -> None:
    y = [0, 1, 0, 1, 1]
    p = [0.1, 0.3, 0.4, 0.6, 0.9]
    threshold = metrics.choose_threshold(y, p, "max_f1")
    assert threshold == pytest.approx(0.3)  # all three strokes caught, one false alarm: F1 0.857


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
