"""`ml train` from data folder to bundle: read, audit, train each fold, write the bundle.

The order is the guarantee: the holdout and the folds are drawn by patient before anything is
trained, the audit must pass before the first step, and balancing happens inside each fold.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.config import (
    DEFAULT_CACHE_DIR,
    DISTRIBUTED_TIMEOUT_MIN,
    TrainConfig,
    config_from_dict,
    load_config,
    save_config,
)
from ml.data import splits
from ml.data.cache import DecodedSet, decode_all
from ml.data.context import network_images
from ml.data.dataset import Dataset, SliceRecord, slice_order
from ml.data.masks import lesion_masks
from ml.data.sources import Source, as_sources, describe_labels, load_sources
from ml.errors import UserError
from ml.hashing import sha256_lines
from ml.train import finish


class BadDataError(UserError):
    """Unreadable files under --strict; the message lists them."""


@dataclass
class Prepared:
    """A dataset read, decoded, split and audited: everything training needs."""

    dataset: Dataset
    decoded: DecodedSet
    records: list[SliceRecord]  # the readable records, one per row of decoded.images
    parts: np.ndarray  # per record: 0 holdout, 1..K fold
    audit: dict
    fingerprint: str  # hash of the readable files' contents, in order
    images: np.ndarray  # per record, as the network sees it (neighbours stacked under 2.5D)
    labels_used: list[dict] = field(default_factory=list)  # per source: which labels (provenance)
    loss_weights: np.ndarray | None = None  # per record (see `loss_weights`); None: all 1
    masks: np.ndarray | None = None  # uint8 lesion masks in the network's frame (mask_loss_weight)
    mask_known: np.ndarray | None = None  # per record: its source gave a mask

    @property
    def labels(self) -> np.ndarray:
        """What each slice is trained and scored on: its slice label, else its study's."""
        return np.array([r.label for r in self.records])

    @property
    def sources(self) -> list[str]:
        return [r.source for r in self.records]

    @property
    def file_hashes(self) -> list[str]:
        """sha256 of each readable record's file, aligned with `records`."""
        return [self.decoded.file_hashes[i] for i in self.decoded.kept]

    @property
    def split_digest(self) -> str:
        """Identity of the assignment: a resumed fold must have had the same validation part."""
        return sha256_lines([str(int(p)) for p in self.parts])[:16]


def prepare(
    source: Path | Sequence[Source],
    cfg: TrainConfig,
    *,
    strict: bool = False,
    split_file: Path | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> Prepared:
    """Read and decode the data, assign holdout and folds by patient, audit the assignment.

    `source`: a folder or manifest, or several sources (ml.data.sources) read as one.
    """
    dataset, labels_used = load_sources(as_sources(source), cfg.class_map, cfg.patient_regex)
    decoded = decode_all(
        [r.path for r in dataset.records],
        image_size=cfg.image_size,
        windows=cfg.windows,
        png16_hu_offset=cfg.png16_hu_offset,
        cache_dir=cache_dir,
        progress=progress,
        crop_head=cfg.crop_head,
    )
    if decoded.bad and strict:
        listing = "\n".join(f"  {dataset.records[i].rel_path}: {why}" for i, why in decoded.bad)
        raise BadDataError(f"{len(decoded.bad)} file(s) cannot be read (--strict):\n{listing}")
    records = [dataset.records[i] for i in decoded.kept]
    labels = [r.label for r in records]
    groups = [r.patient_id for r in records]
    if split_file is not None:
        parts = read_split(split_file, records)
    else:
        parts = splits.assign_parts(
            labels,
            groups,
            folds=cfg.folds,
            holdout_frac=cfg.holdout_frac,
            seed=cfg.seed,
            strata=[r.source for r in records],
        )
    pixel_hashes = [decoded.pixel_hashes[i] for i in decoded.kept]
    audit = splits.audit(labels, groups, parts, pixel_hashes)
    audit["grouped_by_file"] = dataset.grouped_by_file
    fingerprint = sha256_lines([decoded.file_hashes[i] for i in decoded.kept])[:16]
    order = [slice_order(r) for r in records]
    images = network_images(decoded.images, groups, order, cfg.input_mode, decoded.frames)
    weights = loss_weights(records, cfg.study_label_weight)
    prepared = Prepared(
        dataset, decoded, records, parts, audit, fingerprint, images, labels_used, weights
    )
    if cfg.mask_loss_weight > 0:
        if not any(r.mask is not None for r in records):
            raise UserError(
                f"mask_loss_weight={cfg.mask_loss_weight} trains a lesion map from masks, and "
                "none of the data has one; give a manifest with a `mask` column, or set it to 0"
            )
        size = images.shape[1]
        prepared.masks, prepared.mask_known = lesion_masks(records, decoded.frames, size)
    return prepared


def read_split(path: Path, records: Sequence[SliceRecord]) -> np.ndarray:
    """Parts from a CSV `path,fold` (fold 1..K or `holdout`), e.g. to reuse another run's split."""
    assigned: dict[str, int] = {}
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            value = row["fold"].strip().lower()
            assigned[row["path"]] = splits.HOLDOUT if value == "holdout" else int(value)
    missing = [r.rel_path for r in records if r.rel_path not in assigned]
    if missing:
        raise ValueError(f"{len(missing)} slice(s) are not in {path}, e.g. {missing[0]}")
    parts = np.array([assigned[r.rel_path] for r in records])
    folds = sorted(set(parts.tolist()) - {splits.HOLDOUT})
    if len(folds) < 2 or folds != list(range(1, len(folds) + 1)):
        raise ValueError(f"{path} must number its folds 1..K with K >= 2, found {folds}")
    return parts


def run_training(
    source: Path | Sequence[Source],
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    strict: bool = False,
    split_file: Path | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    progress: bool = True,
    notes: Sequence[str] = (),
    distributed: str | None = None,
    timeout_min: float = DISTRIBUTED_TIMEOUT_MIN,
) -> Path:
    """Train every fold (skipping finished ones on --resume) and write the bundle.

    Under torchrun the processes share the folds' training (`distributed`: data, the default,
    or folds; see ml.train.distributed) and rank 0 alone writes; the others return once their part
    is handed over. `timeout_min` bounds every wait for another process.
    """
    from ml.models.network import build_from_config
    from ml.train import distributed as dist
    from ml.train import loop as train  # torch is imported only when training really starts

    build_from_config(cfg)  # missing weights or a bad backbone fail now, not after decoding
    out = Path(out)
    with dist.join(distributed, cfg.device, timeout_min) as team:
        team.on_main(_check_out, out, cfg, resume)
        prepared = team.main_first(  # rank 0 fills the decoded-slice cache, the others read it
            prepare,
            source,
            cfg,
            strict=strict,
            split_file=split_file,
            cache_dir=cache_dir,
            progress=progress and team.is_main,
        )
        team.on_main(_start_out, out, cfg, prepared.audit)
        if team.is_main:
            for line in describe_labels(prepared.labels_used):
                print(line, flush=True)
        splits.refuse_leaks(prepared.audit)
        fold_count = int(prepared.parts.max())
        print(
            f"training {fold_count} folds on {team.description} ({len(prepared.records)} slices)",
            flush=True,
        )
        finished = team.on_main(_finished_folds, out, fold_count, cfg, prepared)
        trainer = _spread_folds if team.mode == "folds" else _train_folds
        results = trainer(train, prepared, fold_count, finished, cfg, team, out, progress)
        if team.is_main:
            identity = finish.write_bundle(out, cfg, prepared, results, notes)
            print(f"bundle {identity} written to {out}", flush=True)
    return out


def _check_out(out: Path, cfg: TrainConfig, resume: bool) -> None:
    """Refuse, before any work, to overwrite a run or to resume one made with another config."""
    if not (out.exists() and any(out.iterdir())):
        return
    if not resume:
        raise FileExistsError(
            f"{out} exists; pass --resume to continue it, or choose another --out"
        )
    saved = out / "config.yaml"
    if saved.is_file() and load_config(saved).digest() != cfg.digest():
        raise ValueError(f"{out} was started with another configuration; cannot resume it")


def _start_out(out: Path, cfg: TrainConfig, audit: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an unfinished bundle must not load
    save_config(cfg, out / "config.yaml")
    _write_json(out / "audit.json", audit)


def _train_folds(train, prepared, fold_count, finished, cfg, team, out, progress) -> list:
    """Fold after fold, each by the whole team (one process, or all of them data parallel)."""
    results = []
    for fold in range(1, fold_count + 1):
        if fold in finished:
            print(f"fold {fold}: already trained, kept (--resume)", flush=True)
            results.append(finished[fold])
            continue
        log = out / "logs" / f"fold_{fold}.jsonl" if team.is_main else io.StringIO()
        together = team if team.mode == "data" else None
        result, state = train.train_fold(
            fold_data(prepared, fold),
            cfg,
            team.device,
            log,
            progress and team.is_main,
            team=together,
        )
        if team.is_main:
            _save_fold(out, cfg, prepared, result, state, team)
        results.append(result)
    return results


def _spread_folds(train, prepared, fold_count, finished, cfg, team, out, progress) -> list:
    """Folds mode: the folds left to train go round the processes (fold k to rank (k-1) % N
    on a fresh run), N at a time. Each process hands its fold to rank 0, which saves it, so
    no process waits for much longer than the time by which two folds' lengths differ."""
    for fold in sorted(finished):
        print(f"fold {fold}: already trained, kept (--resume)", flush=True)
    results = dict(finished)
    pending = [fold for fold in range(1, fold_count + 1) if fold not in finished]
    for first in range(0, len(pending), team.world_size):
        round_folds = pending[first : first + team.world_size]
        if team.rank >= len(round_folds):
            break  # a last round with fewer folds than processes: nothing left for this one
        data = fold_data(prepared, round_folds[team.rank])
        if not team.is_main:
            log = io.StringIO()
            result, state = train.train_fold(data, cfg, team.device, log, progress=False)
            team.hand_over((result, state, log.getvalue()))
            continue
        log_path = out / "logs" / f"fold_{data.fold}.jsonl"
        result, state = train.train_fold(data, cfg, team.device, log_path, progress)
        _save_fold(out, cfg, prepared, result, state, team)
        results[result.fold] = result
        for rank in range(1, len(round_folds)):
            result, state, log_text = team.take_from(rank)
            _save_fold(out, cfg, prepared, result, state, team, log_text=log_text)
            results[result.fold] = result
            print(
                f"fold {result.fold}: trained by rank {rank} in {result.seconds:.0f} s, "
                f"best epoch {result.best_epoch} ({result.chosen_on} {result.best_value:.3f})",
                flush=True,
            )
    if not team.is_main:
        return []  # rank 0 alone holds every fold's result
    return [results[fold] for fold in range(1, fold_count + 1)]


def fold_data(prepared: Prepared, fold: int):
    """The rows fold `fold` trains on, is validated (scored out of fold) on, and holds out."""
    from ml.train.loop import FoldData

    rows = np.arange(len(prepared.records))
    return FoldData(
        fold=fold,
        images=prepared.images,
        labels=prepared.labels,
        train_rows=rows[(prepared.parts != fold) & (prepared.parts != splits.HOLDOUT)].tolist(),
        val_rows=rows[prepared.parts == fold].tolist(),
        holdout_rows=rows[prepared.parts == splits.HOLDOUT].tolist(),
        groups=[r.patient_id for r in prepared.records],
        weights=prepared.loss_weights,
        masks=prepared.masks,
        mask_known=prepared.mask_known,
    )


def loss_weights(records: Sequence[SliceRecord], study_label_weight: float) -> np.ndarray | None:
    """Per slice: `study_label_weight` for a slice trained on its patient's positive label for
    want of its own, where other slices of the run have slice labels; 1 otherwise.

    A negative patient's slices are all negative, so their label is exact either way. A positive
    patient's unlabelled slice may well show nothing: counting it fully teaches the network to
    call normal-looking slices positive. On CT-ICH with half the positive patients' slice labels
    hidden, a frozen-feature probe scored unseen patients best at 0.25 (RESULTS.md).
    """
    if not any(r.slice_known for r in records):
        return None
    guessed = [not r.slice_known and r.study == 1 for r in records]
    if not any(guessed):
        return None
    return np.where(guessed, study_label_weight, 1.0)


def _save_fold(out: Path, cfg, prepared: Prepared, result, state, team, log_text=None) -> None:
    """A fold's weights and result (rank 0 only); the result file, written last, marks the
    fold finished for --resume. `log_text` is the epoch log of a fold trained elsewhere."""
    from safetensors.torch import save_file

    if log_text is not None:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / "logs" / f"fold_{result.fold}.jsonl").write_text(log_text)
    metadata = {
        "fold": str(result.fold),
        "epoch": str(result.best_epoch),
        "chosen_on": result.chosen_on,
        "value": f"{result.best_value:.6f}",
        "config_digest": cfg.digest(),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),  # the checkpoint explains itself
    }
    if team.world_size > 1:
        metadata["distributed"] = f"{team.mode} mode, {team.world_size} processes"
    save_file(state, str(out / f"fold_{result.fold}.safetensors"), metadata=metadata)
    state_record = {**asdict(result), **_fold_identity(cfg, prepared)}
    _write_json(out / "logs" / f"fold_{result.fold}.result.json", state_record)


def _finished_folds(out: Path, fold_count: int, cfg: TrainConfig, prepared: Prepared) -> dict:
    """The saved results of folds trained with this config, data and split, by fold."""
    saved = {fold: _finished_fold(out, fold, cfg, prepared) for fold in range(1, fold_count + 1)}
    return {fold: result for fold, result in saved.items() if result is not None}


def _fold_identity(cfg: TrainConfig, prepared: Prepared) -> dict[str, str]:
    return {"config": cfg.digest(), "data": prepared.fingerprint, "split": prepared.split_digest}


def _finished_fold(out: Path, fold: int, cfg: TrainConfig, prepared: Prepared):
    """A fold's saved result when it was trained with this config, data and split."""
    from ml.train.loop import FoldResult

    path = out / "logs" / f"fold_{fold}.result.json"
    if not (path.is_file() and (out / f"fold_{fold}.safetensors").is_file()):
        return None
    saved = json.loads(path.read_text())
    identity = {key: saved.pop(key, None) for key in ("config", "data", "split")}
    expected = _fold_identity(cfg, prepared)
    if identity["config"] != expected["config"] and _saved_config(out, fold) == expected["config"]:
        identity["config"] = expected["config"]  # saved before a setting existed: its default
    differs = [key for key in ("config", "data", "split") if identity[key] != expected[key]]
    if differs:
        print(f"fold {fold}: saved, but with another {' and '.join(differs)}; trained again")
        return None
    return FoldResult(**saved)


def _saved_config(out: Path, fold: int) -> str | None:
    """The digest of a fold's saved config read by this version: settings added since the fold
    was saved take their defaults, which is what the fold trained with. None if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(out / f"fold_{fold}.safetensors"), "pt") as weights:
            text = (weights.metadata() or {})["config"]
        return config_from_dict(json.loads(text)).digest()
    except (KeyError, ValueError, OSError):  # no config, or one this version cannot read
        return None


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
