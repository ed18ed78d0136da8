"""From cached uint8 slices to normalised tensors, with training augmentation by name.

Training and every later prediction share `to_tensor`, so a slice is normalised the same way
wherever it is scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset


def build_augment(name: str, seed: int | None = None) -> A.Compose | None:
    """`standard`: flips, small affine moves, brightness/contrast, blur; `none`: nothing.

    A seed makes the random sequence repeat from run to run.
    """
    if name == "none":
        return None
    if name == "standard":
        return A.Compose(
            [
                A.HorizontalFlip(p=0.5),
                A.Affine(
                    scale=(0.9, 1.1),
                    translate_percent=(-0.05, 0.05),
                    rotate=(-15, 15),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    p=0.7,
                ),
                A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
                A.GaussianBlur(blur_limit=(3, 3), p=0.1),
            ],
            seed=seed,
        )
    raise ValueError(f"unknown augmentation {name!r}; choose standard or none")


def to_tensor(
    image: np.ndarray, in_chans: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 (H, W, C) -> float (in_chans, H, W), scaled to [0, 1] then normalised."""
    # A copy: cached images are read-only memory maps, which torch will not wrap.
    array = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    if array.shape[0] != in_chans:
        array = array[:1].expand(in_chans, -1, -1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (array - mean_t) / std_t


class SliceDataset(TorchDataset):
    """Rows of a cached image array with their labels and loss weights; `rows` may repeat
    (oversampling, mining). Items are (image, label, weight); the weight is 1 unless given.

    Given lesion `masks` (uint8 (N, H, W)) and `mask_known` (bool (N,)), items gain the mask
    (float (1, H, W), moved by the same flips and affine as the image) and whether it is known.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        rows: Sequence[int],
        *,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: A.Compose | None = None,
        weights: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        mask_known: np.ndarray | None = None,
    ) -> None:
        self.images, self.labels, self.rows = images, labels, list(rows)
        self.weights, self.masks, self.mask_known = weights, masks, mask_known
        self.in_chans, self.mean, self.std, self.augment = in_chans, mean, std, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        row = self.rows[index]
        image = np.asarray(self.images[row])
        mask = None if self.masks is None else np.asarray(self.masks[row])
        if self.augment is not None:
            moved = self.augment(image=image, **({} if mask is None else {"mask": mask}))
            image, mask = moved["image"], moved.get("mask")
            if image.ndim == 2:
                image = image[..., None]
        label = torch.tensor(float(self.labels[row]))
        weight = torch.tensor(1.0 if self.weights is None else float(self.weights[row]))
        item = (to_tensor(image, self.in_chans, self.mean, self.std), label, weight)
        if mask is None:
            return item
        known = self.mask_known is not None and bool(self.mask_known[row])
        return (*item, torch.from_numpy(np.array(mask, np.float32))[None], torch.tensor(known))
