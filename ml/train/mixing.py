"""Soft training targets for few patients: label smoothing and mixup.

The labels here are per patient, so a "Stroke" slice may show no lesion at all: a hard target of
1 asks the network to be certain about exactly the slices it cannot be certain about. Label
smoothing (Szegedy et al., 2016) pulls every target towards 0.5 by `smoothing / 2`; mixup (Zhang
et al., 2018) trains on convex blends of two slices and of their targets, which discourages
memorising single images. Both act on the training batches only; validation and the stored
predictions always see the plain images.
"""

from __future__ import annotations

import numpy as np
import torch


def smooth_labels(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Targets moved from {0, 1} to {smoothing / 2, 1 - smoothing / 2}."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), not {smoothing}")
    return labels.float() * (1.0 - smoothing) + 0.5 * smoothing


def mixup(
    images: torch.Tensor, labels: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image blended with another of the batch, lambda ~ Beta(alpha, alpha) per image.

    lambda is folded to at least 0.5, so each blend keeps its own image as the larger part, and
    the target is blended with the same weight. `rng` makes the draws repeatable.
    """
    targets = labels.float()
    if alpha <= 0 or len(labels) < 2:
        return images, targets
    drawn = rng.beta(alpha, alpha, size=len(labels))
    weight = torch.from_numpy(np.maximum(drawn, 1.0 - drawn)).float().to(images.device)
    partner = torch.from_numpy(rng.permutation(len(labels))).to(images.device)
    w = weight.to(images.dtype).reshape((-1,) + (1,) * (images.dim() - 1))
    mixed = w * images + (1.0 - w) * images[partner]
    return mixed, weight * targets + (1.0 - weight) * targets[partner]
