"""A bundle's fold networks, rebuilt from its config and loaded from its weight files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ml.config import TrainConfig


def load_fold_models(weights: Sequence[Path], cfg: TrainConfig) -> list[torch.nn.Module]:
    """Build each fold's network (no pretrained download) and load its weights, in eval mode."""
    from safetensors.torch import load_file

    from ml.models.network import build_model

    models = []
    for path in weights:
        model = build_model(
            cfg.backbone,
            in_chans=cfg.in_chans,
            pretrained="none",
            head_hidden=cfg.head_hidden,
            dropout=cfg.dropout,
            head=cfg.head,
            lesion_layer=cfg.mask_layer,
        ).model
        model.load_state_dict(load_file(str(path)))
        models.append(model.eval().to(memory_format=torch.channels_last))
    return models
