"""One slice made ready for the network exactly as in training, and the order of a study's
slices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.config import TrainConfig
from ml.data.cache import network_frame
from ml.data.dataset import natural_key
from ml.data.headct import HeadCtCheck, check_head_ct
from ml.data.readers import read_slice
from ml.data.transforms import to_tensor

PLAUSIBLE = HeadCtCheck(True)


@dataclass(frozen=True)
class Prepared:
    """One slice ready for the network, and as the model saw it (for overlays)."""

    name: str
    tensor: torch.Tensor  # (C, H, W), normalised
    windowed: np.ndarray  # uint8 (H, W, C) at the network size
    info: dict[str, Any]
    frame: tuple[float, float, float] = (1.0, 0.0, 0.0)  # see ml.data.cache.network_frame
    check: HeadCtCheck = PLAUSIBLE  # does the decoded slice look like a head CT?


def prepare_slice(
    source: Path | str | bytes,
    cfg: TrainConfig,
    mean: Sequence[float],
    std: Sequence[float],
    name: str | None = None,
) -> Prepared:
    """The training preprocessing of one slice: reader, windows, resize, normalisation; and
    whether the decoded slice looks like an axial head CT at all."""
    decoded = read_slice(source, windows=cfg.windows, png16_hu_offset=cfg.png16_hu_offset)
    check = check_head_ct(decoded.pixels)
    pixels, frame = network_frame(
        decoded.pixels, len(cfg.windows), cfg.image_size, crop_head=cfg.crop_head
    )
    tensor = to_tensor(pixels, cfg.in_chans, mean, std)
    label = name or (Path(source).name if not isinstance(source, bytes) else "upload")
    info = {"format": decoded.format, **decoded.info}
    return Prepared(label, tensor, pixels, info, frame, check)


def order_slices(prepared: Sequence[Prepared]) -> tuple[list[Prepared], str]:
    """Slice order: DICOM position along the axis, else InstanceNumber, else natural name order."""
    if prepared and all(p.info.get("slice_position") is not None for p in prepared):
        return sorted(prepared, key=lambda p: p.info["slice_position"]), "slice_position"
    if prepared and all(p.info.get("instance_number") is not None for p in prepared):
        return sorted(prepared, key=lambda p: p.info["instance_number"]), "instance_number"
    return sorted(prepared, key=lambda p: natural_key(p.name)), "file_name"
