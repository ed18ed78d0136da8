"""The network: timm backbones with the classification head, pretrained weights found offline,
and a bundle's fold models loaded from their files."""

from __future__ import annotations

from ml.lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
        "build_model": "ml.models.network",
        "build_from_config": "ml.models.network",
        "load_fold_models": "ml.models.loading",
    },
)
