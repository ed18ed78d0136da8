"""Training: the epoch loop, losses, mixing, hard-negative mining, one or several processes,
the per-fold pipeline and finishing a bundle."""

from __future__ import annotations

from ml.lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
        "FocalLoss": "ml.train.losses",
        "prepare_training": "ml.train.pipeline:prepare",
        "run_training": "ml.train.pipeline",
    },
)
