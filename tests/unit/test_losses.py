"""ml.train.losses: focal loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from ml.train.losses import BCELoss, FocalLoss, build_loss


def _focal_by_hand(logit: float, label: int, alpha: float, gamma: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    p_t = p if label == 1 else 1.0 - p
    alpha_t = alpha if label == 1 else 1.0 - alpha
    return -alpha_t * (1.0 - p_t) ** gamma * math.log(p_t)


def test_focal_loss_matches_the_formula() -> None:
    logits = torch.tensor([0.0, 2.0, -1.5, 3.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0])
    expected = [_focal_by_hand(x, int(y), 0.35, 2.5) for x, y in zip(logits, labels, strict=True)]
    per_example = FocalLoss(0.35, 2.5, reduction="none")(logits, labels)
    torch.testing.assert_close(per_example, torch.tensor(expected), rtol=1e-5, atol=1e-7)
    # Hand value for the first example: 0.35 * 0.5 ** 2.5 * ln 2.
    assert per_example[0].item() == pytest.approx(0.35 * 0.5**2.5 * math.log(2), rel=1e-6)
    mean = FocalLoss(0.35, 2.5)(logits, labels)
    assert mean.item() == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_alpha_weights_positives_by_alpha_and_negatives_by_one_minus_alpha() -> None:
    loss = FocalLoss(alpha=0.35, gamma=0.0, reduction="none")
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    x = torch.tensor([0.3])
    assert loss(x, torch.ones(1)).item() == pytest.approx(0.35 * bce(x, torch.ones(1)).item())
    assert loss(x, torch.zeros(1)).item() == pytest.approx(0.65 * bce(x, torch.zeros(1)).item())


def test_focal_loss_down_weights_easy_examples() -> None:
    loss = FocalLoss(0.5, 2.0, reduction="none")
    easy, hard = loss(torch.tensor([4.0, -1.0]), torch.ones(2))
    bce = BCELoss(reduction="none")(torch.tensor([4.0, -1.0]), torch.ones(2))
    assert easy / hard < bce[0] / bce[1]


def test_focal_loss_accepts_n_by_1_logits_and_has_gradients() -> None:
    logits = torch.zeros(3, 1, requires_grad=True)
    FocalLoss()(logits, torch.tensor([1.0, 0.0, 1.0])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_build_loss_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="focal, bce"):
        build_loss("hinge")
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="median")
