"""Label smoothing and mixup: soft targets that match the blended images, drawn repeatably."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.config import make_config
from ml.train.mixing import mixup, smooth_labels


def test_smoothing_moves_targets_towards_one_half() -> None:
    targets = smooth_labels(torch.tensor([0, 1, 1]), 0.1)
    assert torch.allclose(targets, torch.tensor([0.05, 0.95, 0.95]))
    assert torch.equal(smooth_labels(torch.tensor([0, 1]), 0.0), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="smoothing"):
        smooth_labels(torch.tensor([1]), 1.0)


def test_mixup_blends_targets_with_the_weight_of_the_images() -> None:
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    # Each image is constant and equal to its label, so a blend's pixels read its target.
    images = labels.float().reshape(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()
    mixed, targets = mixup(images, labels, 0.4, np.random.default_rng(0))
    assert torch.allclose(mixed.mean(dim=(1, 2, 3)), targets)
    assert not torch.equal(targets, labels.float())  # something was blended
    own_share = 1.0 - (targets - labels.float()).abs()  # the image's own label keeps >= half
    assert bool((own_share >= 0.5 - 1e-6).all())


def test_mixup_draws_repeat_with_the_seed_and_alpha_zero_is_off() -> None:
    images, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    first = mixup(images, labels, 0.4, np.random.default_rng(7))
    again = mixup(images, labels, 0.4, np.random.default_rng(7))
    other = mixup(images, labels, 0.4, np.random.default_rng(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    plain = mixup(images, labels, 0.0, np.random.default_rng(7))
    assert plain[0] is images and torch.equal(plain[1], labels.float())


def test_recipe_softens_training_batches_only_when_asked() -> None:
    from ml.train.loop import FoldData, _Fold

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 48, 48, 1), dtype=np.uint8)
    labels = np.array([0, 1] * 8)
    data = FoldData(fold=1, images=images, labels=labels, train_rows=list(range(16)), val_rows=[])
    assert _Fold(data, make_config("test"), torch.device("cpu")).softener(0) is None
    cfg = make_config("test", mixup_alpha=0.4, label_smoothing=0.2)
    fold = _Fold(data, cfg, torch.device("cpu"))
    batch = next(iter(fold.loader(list(range(16)))))
    images_labels = batch[:2]  # the third item is the loss weight, which mixing keeps
    once, twice = fold.softener(1)(*images_labels), fold.softener(1)(*images_labels)
    assert torch.equal(once[0], twice[0]) and torch.equal(once[1], twice[1])
    assert not torch.equal(fold.softener(2)(*images_labels)[1], once[1])  # a new draw each epoch
    assert float(once[1].min()) >= 0.1 - 1e-6 and float(once[1].max()) <= 0.9 + 1e-6  # smoothed


@pytest.mark.parametrize("override", [{"label_smoothing": 1.0}, {"mixup_alpha": -0.1}])
def test_bad_softening_values_are_refused(override: dict) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        make_config("test", **override)
