"""Losses for one stroke logit per slice, built by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al., 2017) on logits.

    loss = -alpha_t * (1 - p_t) ** gamma * log(p_t), where p_t is the probability given to the
    true class and alpha_t = alpha for stroke (label 1), 1 - alpha for normal (label 0). With the
    reference alpha = 0.35, positives are weighted by 0.35 and negatives by 0.65: alpha is not
    "the weight of the rare class" unless it is set above 0.5.
    """

    def __init__(self, alpha: float = 0.35, gamma: float = 2.5, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}")
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, reduction: str | None = None
    ) -> torch.Tensor:
        """The loss, reduced by `reduction` when given (e.g. "none" for per-sample weights)."""
        logits = logits.reshape(-1).float()
        targets = targets.reshape(-1).float()
        log_p_t = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = log_p_t.exp()
        alpha_t = self.alpha * targets + (1.0 - self.alpha) * (1.0 - targets)
        loss = -alpha_t * (1.0 - p_t).pow(self.gamma) * log_p_t
        return _reduce(loss, reduction or self.reduction)


class BCELoss(nn.Module):
    """Plain binary cross-entropy on logits, with an optional weight on positives."""

    def __init__(self, pos_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}")
        self.pos_weight, self.reduction = pos_weight, reduction

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, reduction: str | None = None
    ) -> torch.Tensor:
        """The loss, reduced by `reduction` when given (e.g. "none" for per-sample weights)."""
        logits = logits.reshape(-1).float()
        targets = targets.reshape(-1).float()
        weight = torch.tensor(self.pos_weight, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=weight, reduction="none"
        )
        return _reduce(loss, reduction or self.reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


LOSSES = {"focal": FocalLoss, "bce": BCELoss}


def build_loss(name: str, **kwargs: float | str) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name](**kwargs)
