"""One fold at a time: epochs, validation, hard-example mining and the kept checkpoint.

With `checkpoint: best` the epoch kept is the one with the best validation ROC-AUC of that same
fold; the out-of-fold predictions come from it, which makes them optimistic (the bundle measures
by how much). With `checkpoint: last` each fold keeps its final epoch and nothing is chosen on
the validation patients.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
import torch
from timm.layers import convert_sync_batchnorm
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
)
from tqdm import tqdm

from ml.config import TrainConfig
from ml.data.transforms import SliceDataset, build_augment
from ml.data.tta import build_views
from ml.metrics import scores as metrics
from ml.models.network import LESION_MAP, StrokeNet, build_from_config, head_parameters
from ml.runtime import exact_float32
from ml.train.losses import build_loss
from ml.train.mining import select_hard_examples
from ml.train.mixing import mixup, smooth_labels

if TYPE_CHECKING:
    from ml.train.distributed import Team


@dataclass
class FoldData:
    """What one fold trains and scores on: rows index the cached image array."""

    fold: int
    images: np.ndarray
    labels: np.ndarray  # per row of `images`
    train_rows: list[int]
    val_rows: list[int]
    holdout_rows: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # patient per row; empty when unknown
    weights: np.ndarray | None = None  # loss weight per row; None: all 1
    masks: np.ndarray | None = None  # uint8 (N, H, W) lesion mask per row, for the lesion map
    mask_known: np.ndarray | None = None  # bool (N,): the row's source has a mask for it


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    chosen_on: str  # "val_roc_auc" or "val_loss" when a fold lacks a class
    best_value: float
    val_probabilities: list[float]
    holdout_probabilities: list[float]
    hard_examples_mined: int
    seconds: float
    weights_source: str
    mean: list[float]
    std: list[float]
    # One view per epoch, as scored for choosing; empty in results saved before it was kept.
    epoch_val_probabilities: list[list[float]] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def lr_factor(progress: float, warmup_fraction: float) -> float:
    """Linear warm-up to 1, then cosine decay towards 0, over progress in [0, 1]."""
    if progress < warmup_fraction:
        return (progress + 1e-3) / (warmup_fraction + 1e-3)
    span = max(1e-8, 1.0 - warmup_fraction)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup_fraction) / span)))


def balanced_rows(
    rows: Sequence[int], labels: np.ndarray, how: str, rng: np.random.Generator
) -> tuple[list[int], torch.Tensor | None]:
    """Rows for one epoch and sampling weights; balancing only ever sees training rows."""
    rows = list(rows)
    if how == "none":
        return rows, None
    classes = labels[rows]
    counts = {c: int(np.sum(classes == c)) for c in (0, 1)}
    if how == "sampler":
        weights = torch.tensor([1.0 / counts[int(c)] for c in classes], dtype=torch.double)
        return rows, weights
    minority = min(counts, key=counts.get)
    deficit = max(counts.values()) - counts[minority]
    pool = [r for r, c in zip(rows, classes, strict=True) if c == minority]
    extra = rng.choice(pool, size=deficit, replace=True).tolist() if deficit and pool else []
    return rows + extra, None


class RankShare(Sampler[list[int]]):
    """One process's piece of every global batch, under data-parallel training.

    The global batches are exactly those one process draws (same sampler, generator and batch
    size); each is cut into `world_size` contiguous pieces, the first ones a sample longer when
    the size does not divide. Every process must take part in every step, so a process whose
    piece is empty (a last batch smaller than the number of processes) gets the batch's first
    sample as a stand-in, and `loss_weight` gives it weight 0.
    """

    def __init__(self, batches: BatchSampler, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size
        self.samples = len(batches.sampler)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            start, stop = self._bounds(len(batch))
            yield batch[start:stop] or batch[:1]

    def _bounds(self, size: int) -> tuple[int, int]:
        base, extra = divmod(size, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def global_size(self, step: int) -> int:
        size = self.batches.batch_size
        return min(size, self.samples - step * size)

    def real_size(self, step: int) -> int:
        """Samples of step `step` that are this process's own (0 for a stand-in)."""
        start, stop = self._bounds(self.global_size(step))
        return stop - start

    def loss_weight(self, step: int) -> float:
        """Factor on this process's mean loss such that DistributedDataParallel's average of
        the gradients over processes is the gradient of the global batch's mean loss."""
        return self.real_size(step) * self.world_size / self.global_size(step)

    @property
    def real_total(self) -> int:
        return sum(self.real_size(step) for step in range(len(self)))


def make_loader(
    dataset: SliceDataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    weights: torch.Tensor | None = None,
    shuffle: bool = False,
    share: tuple[int, int] | None = None,
) -> DataLoader:
    """Batches in a seeded order; with `share` (rank, world size), that process's piece of
    each batch a single process would draw (see `RankShare`)."""
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if weights is not None:
        sampler = WeightedRandomSampler(
            weights, len(weights), replacement=True, generator=generator
        )
        shuffle = False
    if share is not None:
        if sampler is None:
            # What DataLoader builds itself for shuffle=True, on the same generator.
            sampler = RandomSampler(dataset, generator=generator) if shuffle else None
        batches = BatchSampler(
            sampler or SequentialSampler(dataset), batch_size=batch_size, drop_last=False
        )
        return DataLoader(
            dataset,
            batch_sampler=RankShare(batches, *share),
            num_workers=num_workers,
            generator=generator,  # drawn from first, as in the single-process loader
            persistent_workers=False,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        drop_last=False,
        persistent_workers=False,
    )


def _autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def train_one_epoch(
    model: StrokeNet,
    loader: DataLoader,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    set_lr: Callable[[float], float],
    epoch: int,
    amp: bool,
    grad_clip: float,
    channels_last: bool,
    progress: tqdm | None = None,
    soften: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    mask_weight: float = 0.0,
) -> dict[str, float]:
    """One pass over the loader; returns mean loss, images per second and the last learning rate.

    `soften` turns a batch's images and hard labels into what the loss sees (mixup, label
    smoothing); the loss reported is then that against the softened targets.

    Under data-parallel training (a `RankShare` loader) the loss is weighted so that the
    averaged gradient is that of the global batch, and only this process's own samples count.

    With `mask_weight` (and a loader whose items carry masks) the model's lesion map is trained
    too, and `mask_weight` times `lesion_map_loss` is added; the loss reported includes it.
    """
    model.train()
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and amp and not torch.cuda.is_bf16_supported()
    )
    share = loader.batch_sampler if isinstance(loader.batch_sampler, RankShare) else None
    total_loss, seen, lr = 0.0, 0, 0.0
    map_loss, map_steps = 0.0, 0
    start = time.perf_counter()
    for step, (images, labels, weights, *masks) in enumerate(loader):
        lr = set_lr(epoch + step / len(loader))
        if soften is not None:  # on the host batch, before the memory format is set
            images, labels = soften(images, labels)  # a blend keeps its own image's weight
        images = _to_device(images, device, channels_last)
        labels = labels.to(device, non_blocking=True)
        weights = weights.to(device, non_blocking=True)
        with _autocast(device, amp):
            if mask_weight > 0 and masks:
                logits, lesion_logits = model(images, with_map=True)
                mask, known = (m.to(device, non_blocking=True) for m in masks)
                lesion = lesion_map_loss(lesion_logits, mask, known)
                loss = weighted(loss_fn, logits, labels, weights) + mask_weight * lesion
                map_loss, map_steps = map_loss + float(lesion.detach()), map_steps + 1
            else:
                loss = weighted(loss_fn, model(images), labels, weights)
        counted, scaled = len(labels), loss
        if share is not None:
            counted, scaled = share.real_size(step), loss * share.loss_weight(step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(scaled).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], grad_clip
            )
        scaler.step(optimizer)
        scaler.update()
        total_loss += float(loss.detach()) * counted
        seen += counted
        if progress is not None:
            rate = seen / max(1e-9, time.perf_counter() - start)
            progress.update(counted)
            progress.set_postfix(loss=f"{total_loss / seen:.4f}", img_s=f"{rate:.1f}")
    elapsed = time.perf_counter() - start
    stats = {"train_loss": total_loss / max(1, seen), "images_per_s": seen / elapsed, "lr": lr}
    if map_steps:
        stats["lesion_map_loss"] = map_loss / map_steps  # mean over this process's steps
    return stats


def weighted(
    loss_fn: torch.nn.Module, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The loss of a batch, each sample counted by its weight (the batch mean when all are 1)."""
    if bool((weights == 1).all()):
        return loss_fn(logits, targets)
    per_sample = loss_fn(logits, targets, reduction="none")
    return (per_sample * weights).sum() / weights.sum().clamp_min(1e-8)


def lesion_map_loss(
    lesion_logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of the lesion map against each cell's lesion share, the mask
    averaged down to the map's grid; the mean over cells and over the slices with a known mask
    (0 when a batch has none, which still keeps the map in the graph)."""
    target = torch.nn.functional.adaptive_avg_pool2d(masks.float(), lesion_logits.shape[-2:])
    per_cell = torch.nn.functional.binary_cross_entropy_with_logits(
        lesion_logits.float(), target, reduction="none"
    )
    per_slice = per_cell.flatten(1).mean(dim=1)
    share = known.float()
    return (per_slice * share).sum() / share.sum().clamp_min(1.0)


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


@torch.inference_mode()
def evaluate(
    model: StrokeNet,
    loader: DataLoader,
    *,
    device: torch.device,
    views: Sequence[str] = ("identity",),
    amp: bool = True,
    channels_last: bool = True,
) -> np.ndarray:
    """Stroke probability per example: the mean over test-time views of sigmoid(logit)."""
    model.eval()
    transforms = build_views(tuple(views))
    probabilities = []
    precision = _autocast(device, amp) if amp or device.type != "cuda" else exact_float32()
    with precision:
        for images, *_ in loader:
            images = _to_device(images, device, channels_last)
            batch = torch.stack([torch.sigmoid(model(t(images)).float()) for t in transforms])
            probabilities.append(batch.mean(dim=0).reshape(-1).cpu())
    return torch.cat(probabilities).numpy() if probabilities else np.zeros(0)


class _Fold:
    """One fold's model, optimiser and loaders: the parts `train_fold` puts in order.

    With a `team`, this process trains the fold together with the others (data parallel):
    each takes its piece of every global batch and scores its piece of every scored set.
    """

    def __init__(
        self, data: FoldData, cfg: TrainConfig, device: torch.device, team: Team | None = None
    ) -> None:
        self.data, self.cfg, self.device, self.team = data, cfg, device, team
        self.seed = cfg.seed + data.fold
        seed_everything(self.seed, cfg.deterministic)
        self.built = build_from_config(cfg)
        self.model = self.built.model.to(device)
        if team is not None:
            self._join(team)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        focal = {"alpha": cfg.focal_alpha, "gamma": cfg.focal_gamma}
        self.loss_fn = build_loss(cfg.loss, **(focal if cfg.loss == "focal" else {}))
        self.optimizer = torch.optim.AdamW(
            [
                {"params": list(self.model.backbone.parameters()), "peak": cfg.lr},
                {"params": head_parameters(self.model), "peak": cfg.head_lr},
            ],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        self.warmup = min(1.0, cfg.warmup_epochs / cfg.epochs)
        self.rng = np.random.default_rng(self.seed)  # oversampling draws

    def _join(self, team: Team) -> None:
        """Same initial weights everywhere (seeded above); per-process dropout draws."""
        if self.device.type == "cuda":
            # BatchNorm over the whole global batch, as one process would normalise it. torch's
            # SyncBatchNorm runs on GPUs only: on the CPU each process normalises its piece.
            # timm's converter keeps the activation that its BatchNormAct2d layers carry.
            self.model = convert_sync_batchnorm(self.model)
        torch.manual_seed(_process_seed(self.seed, team.rank))

    def set_lr(self, epoch_progress: float) -> float:
        """Learning rates at a fractional epoch; returns the backbone's."""
        factor = lr_factor(epoch_progress / self.cfg.epochs, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def loader(
        self,
        rows: Sequence[int],
        *,
        augment: bool = False,
        weights: torch.Tensor | None = None,
        epoch: int = 0,
    ) -> DataLoader:
        """Training loaders draw a new order and new augmentations each epoch, repeatably.

        Under data parallelism the order is the single-process one, shared out by `RankShare`;
        augmentations are drawn per process (a stream cannot be split without replaying it).
        """
        cfg = self.cfg
        epoch_seed = self.seed * 1000 + epoch
        augment_seed, share = epoch_seed, None
        if self.team is not None and augment:
            augment_seed = _process_seed(epoch_seed, self.team.rank)
            share = (self.team.rank, self.team.world_size)
        dataset = SliceDataset(
            self.data.images,
            self.data.labels,
            rows,
            in_chans=cfg.in_chans,
            mean=self.built.mean,
            std=self.built.std,
            augment=build_augment(cfg.augment, augment_seed) if augment else None,
            weights=self.data.weights,
            **self._masks(augment),
        )
        return make_loader(
            dataset,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            seed=epoch_seed,
            weights=weights,
            shuffle=augment and weights is None,
            share=share,
        )

    def _masks(self, training: bool) -> dict[str, np.ndarray]:
        """Lesion masks for a training loader, where the recipe trains the lesion map."""
        if not training or self.cfg.mask_loss_weight <= 0 or self.data.masks is None:
            return {}
        return {"masks": self.data.masks, "mask_known": self.data.mask_known}

    def score(
        self, rows: Sequence[int], views: Sequence[str] = ("identity",), *, amp: bool = True
    ) -> np.ndarray:
        """Probabilities for `rows`; a team scores one piece each and shares the pieces."""
        if self.team is None:
            return self._score(rows, views, amp)
        piece = np.array_split(np.asarray(rows, dtype=int), self.team.world_size)[self.team.rank]
        return np.concatenate(self.team.all_gather(self._score(piece.tolist(), views, amp)))

    def _score(self, rows: Sequence[int], views: Sequence[str], amp: bool) -> np.ndarray:
        if not rows:
            return np.zeros(0)
        return evaluate(
            self.model,
            self.loader(rows),
            device=self.device,
            views=views,
            amp=self.cfg.amp and amp,
            channels_last=self.cfg.channels_last,
        )

    def train_epoch(self, epoch: int, rows: list[int], bar: tqdm) -> dict[str, float]:
        """One epoch on `rows`; with a team, data-parallel, and the figures returned are those
        of the global batches."""
        cfg, team = self.cfg, self.team
        self.model.freeze_backbone(epoch < cfg.freeze_epochs)
        rows, weights = balanced_rows(rows, self.data.labels, cfg.balance, self.rng)
        loader = self.loader(rows, augment=True, weights=weights, epoch=epoch)
        own = len(rows) if team is None else loader.batch_sampler.real_total
        bar.reset(total=own)
        stats = train_one_epoch(
            # Made again each epoch: the wrapper syncs only what is trainable when it is made.
            self.model if team is None else team.data_parallel(self.model),
            loader,
            self.loss_fn,
            self.optimizer,
            device=self.device,
            set_lr=self.set_lr,
            epoch=epoch,
            amp=cfg.amp,
            grad_clip=cfg.grad_clip,
            channels_last=cfg.channels_last,
            progress=bar,
            soften=self.softener(epoch),
            mask_weight=cfg.mask_loss_weight,
        )
        if team is None:
            return stats
        team.sync_buffers(self.model)
        loss_sum, seen, rate = team.sum([stats["train_loss"] * own, own, stats["images_per_s"]])
        return {**stats, "train_loss": loss_sum / max(1.0, seen), "images_per_s": rate}

    def softener(self, epoch: int):
        """Mixup then label smoothing of training batches, or None when the recipe has neither.

        The mixup draws come from a stream seeded by fold, epoch and process, so a run repeats.
        """
        cfg = self.cfg
        if cfg.mixup_alpha <= 0 and cfg.label_smoothing <= 0:
            return None
        rank = 0 if self.team is None else self.team.rank
        rng = np.random.default_rng([self.seed, epoch, rank])

        def soften(images: torch.Tensor, labels: torch.Tensor):
            images, targets = mixup(images, labels, cfg.mixup_alpha, rng)
            return images, smooth_labels(targets, cfg.label_smoothing)

        return soften

    def hard_examples(self) -> list[int]:
        """Rows of the fold's training part that the model, as it stands, gets wrong."""
        rows = self.data.train_rows
        picked = select_hard_examples(
            self.data.labels[rows],
            self.score(rows),
            mode=self.cfg.hnm_mode,
            threshold=self.cfg.hnm_threshold,
        )
        return [rows[i] for i in picked]


def train_fold(
    data: FoldData,
    cfg: TrainConfig,
    device: torch.device,
    log_to: Path | TextIO,
    progress: bool = True,
    *,
    team: Team | None = None,
) -> tuple[FoldResult, dict[str, torch.Tensor]]:
    """Train one fold from the pretrained backbone; return its result and best weights.

    The epoch log goes to `log_to`, a file or an open text stream (a process that must not
    write files keeps it in memory). With `team`, its processes train this fold together, data
    parallel, and each returns the same result and weights.
    """
    start = time.perf_counter()
    fold = _Fold(data, cfg, device, team)
    train_rows, mined = list(data.train_rows), 0
    best: dict[str, object] = {"value": -math.inf}
    epoch_scores: list[list[float]] = []
    with _open_log(log_to) as log:
        for epoch in range(cfg.epochs):
            with tqdm(
                desc=f"fold {data.fold} epoch {epoch + 1}/{cfg.epochs}",
                unit="img",
                disable=not progress,
                leave=False,
            ) as bar:
                stats = fold.train_epoch(epoch, train_rows, bar)
                val_probabilities = fold.score(data.val_rows)
                val = _validation_scores(
                    data.labels[data.val_rows],
                    val_probabilities,
                    fold.loss_fn,
                    [data.groups[i] for i in data.val_rows] if data.groups else None,
                    # "auto" is chosen once every fold is done; the log reads the mean until then
                    "mean" if cfg.study_aggregation == "auto" else cfg.study_aggregation,
                )
                bar.set_postfix(
                    loss=f"{stats['train_loss']:.4f}",
                    val_auc=_fmt(val["val_roc_auc"]),
                    img_s=f"{stats['images_per_s']:.1f}",
                )
            chosen_on, value = _criterion(val)
            epoch_scores.append([float(v) for v in val_probabilities])
            keep = value > best["value"]
            if cfg.checkpoint == "last":  # the value stays for the record; it chooses nothing
                keep, chosen_on = epoch + 1 == cfg.epochs, "last_epoch"
            if keep:
                state = copy.deepcopy(fold.model.state_dict())
                best = {"value": value, "epoch": epoch + 1, "chosen_on": chosen_on, "state": state}
            added = 0
            if cfg.hnm_epoch and epoch + 1 == cfg.hnm_epoch and epoch + 1 < cfg.epochs:
                hard = fold.hard_examples()
                mined, added = len(hard), len(hard) * cfg.hnm_copies
                train_rows += hard * cfg.hnm_copies
            row = {
                "fold": data.fold,
                "epoch": epoch + 1,
                "frozen_backbone": epoch < cfg.freeze_epochs,
                **stats,
                **val,
                "hard_examples_added": added,
                # Kept so that other checkpoint rules (last epoch, patient-level AUC) can be
                # compared afterwards on the same run; one view, as used for choosing.
                "val_probabilities": epoch_scores[-1],
                "seconds": round(time.perf_counter() - start, 1),
            }
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(
                f"fold {data.fold} epoch {epoch + 1}/{cfg.epochs}: loss {stats['train_loss']:.4f}"
                f" val_auc {_fmt(val['val_roc_auc'])} {stats['images_per_s']:.1f} img/s",
                flush=True,
            )
    fold.model.load_state_dict(best["state"])
    result = FoldResult(
        fold=data.fold,
        best_epoch=int(best["epoch"]),
        chosen_on=str(best["chosen_on"]),
        best_value=float(best["value"]),
        # Stored predictions are scored in float32, even after mixed-precision training, so
        # that the Predictor reproduces them on any device.
        val_probabilities=fold.score(data.val_rows, cfg.tta_views, amp=False).tolist(),
        holdout_probabilities=fold.score(data.holdout_rows, cfg.tta_views, amp=False).tolist(),
        hard_examples_mined=mined,
        seconds=round(time.perf_counter() - start, 1),
        weights_source=fold.built.weights_source,
        mean=list(fold.built.mean),
        std=list(fold.built.std),
        epoch_val_probabilities=epoch_scores,
    )
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in best["state"].items()
        if not k.startswith(LESION_MAP)  # training-only; the saved model is the plain one
    }
    return result, state


def _validation_scores(
    labels: np.ndarray,
    probabilities: np.ndarray,
    loss_fn: torch.nn.Module,
    groups: Sequence[str] | None = None,
    aggregation: str = "mean",
) -> dict[str, float | None]:
    """Loss and ROC-AUC of one epoch's validation scores; at patient level too given `groups`."""
    p = np.clip(probabilities, 1e-6, 1 - 1e-6)
    logits = torch.from_numpy(np.log(p / (1 - p)))
    loss = float(loss_fn(logits, torch.from_numpy(labels.astype(np.float32))))
    scores: dict[str, float | None] = {"val_loss": loss, "val_roc_auc": _auc(labels, p)}
    if groups is not None and len(labels):
        _, patient_labels, patient_scores = metrics.patient_scores(
            groups, labels, probabilities, aggregation
        )
        scores["val_patient_roc_auc"] = _auc(patient_labels, patient_scores)
    return scores


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    try:
        return metrics.roc_auc(labels, scores)
    except ValueError:  # a part without one of the classes has no AUC
        return None


def _open_log(log_to: Path | TextIO):
    if not isinstance(log_to, Path):
        return nullcontext(log_to)
    log_to.parent.mkdir(parents=True, exist_ok=True)
    return log_to.open("w")


def _process_seed(seed: int, rank: int) -> int:
    """A seed of its own for each process, from the shared one."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _criterion(val: dict[str, float | None]) -> tuple[str, float]:
    if val["val_roc_auc"] is not None:
        return "val_roc_auc", float(val["val_roc_auc"])
    return "val_loss", -float(val["val_loss"])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
