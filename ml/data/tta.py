"""Test-time views: each is an involution on (N, C, H, W) tensors, so it also un-flips maps."""

from __future__ import annotations

from collections.abc import Callable

import torch

VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[-1]),
    "vflip": lambda x: torch.flip(x, dims=[-2]),
}


def build_views(names: tuple[str, ...] | list[str]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    unknown = [n for n in names if n not in VIEWS]
    if unknown or not names:
        raise ValueError(f"unknown TTA view(s) {unknown}; choose from {', '.join(VIEWS)}")
    return [VIEWS[n] for n in names]
