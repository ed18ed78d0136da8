"""Training configuration: one frozen dataclass, named presets stored as YAML data.

Every field can be overridden from the command line (`--set field=value`); the resolved
configuration is written into each bundle as `config.yaml`, so a bundle says exactly how it
was made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_CACHE_DIR = Path(".cache") / "slices"  # decoded slices, relative to the working folder

DEFAULT_PATIENT_REGEX = r"^(?P<patient>\d+)\s*\((?P<slice>\d+)\)"
DEFAULT_CLASS_MAP = {
    "Normal": 0,
    "Stroke": 1,
    "Bleeding": 1,
    "Ischemia": 1,
    "Haemorrhage": 1,
    "Hemorrhage": 1,
}
# A dataset folder may say where its images come from in this file; `ml synth` writes one that
# says SYNTHETIC_ORIGIN, the trainer records the origin in the bundle, and every page and API
# answer of a bundle trained on it says that it knows nothing about real CT.
ORIGIN_FILE = "origin.json"
SYNTHETIC_ORIGIN = "synthetic phantoms"


def _f(default: Any, help: str) -> Any:
    """A dataclass field with an immutable default and the help text that feeds `--help`."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """How one ensemble is trained. Defaults are the published reference recipe."""

    # data
    image_size: int = _f(384, "side in pixels of the square network input")
    in_chans: int = _f(3, "network input channels (1 or 3); one window is repeated to fill 3")
    windows: tuple[tuple[float, float], ...] = _f(
        ((40.0, 80.0),),
        "CT windows (level, width) in HU for DICOM and 16-bit PNG; three stack as channels",
    )
    png16_hu_offset: float = _f(-1024.0, "HU = stored value + offset, for 16-bit PNG input")
    crop_head: bool = _f(
        False,
        "crop to the head (largest bright connected region) before resizing, so scale and "
        "position stop varying with the field of view",
    )
    input_mode: str = _f(
        "slice",
        "slice: one slice fills the channels | neighbours: slices k-1, k, k+1 of the same "
        "patient as the three channels (2.5D); a lone slice fills its own neighbours | "
        "neighbours_aligned: the same, with the neighbours redrawn in the middle slice's crop",
    )
    class_map: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_CLASS_MAP),
        metadata={"help": "class folder name -> 0 (normal) / 1 (stroke)"},
    )
    patient_regex: str = _f(
        DEFAULT_PATIENT_REGEX, "regex on the file name with a (?P<patient>...) group"
    )
    # splits
    folds: int = _f(5, "number of patient-grouped cross-validation folds")
    holdout_frac: float = _f(0.0, "fraction of patients held out before anything else (0 = none)")
    seed: int = _f(42, "seed for splits, sampling, augmentation and initialisation")
    # model
    backbone: str = _f("tf_efficientnet_b3.ns_jft_in1k", "timm model name")
    pretrained: str = _f("auto", "auto | file | hub | packaged | none")
    pretrained_file: str | None = _f(None, "local weight file for the backbone")
    head_hidden: int = _f(512, "width of the hidden layer of the classification head")
    dropout: float = _f(0.4, "dropout before the last linear layer")
    head: str = _f(
        "pooled",
        "classifier: pooled (global average pool -> MLP) | lesion_map (a lesion logit per cell "
        "of the mask_layer feature map, pooled by log-sum-exp into the slice's logit; masks, "
        "where given, train the same map; stride16 drops the backbone's later stages)",
    )
    # optimisation
    epochs: int = _f(14, "training epochs per fold")
    freeze_epochs: int = _f(2, "epochs at the start with the backbone frozen (head only)")
    frozen_stages: int = _f(
        0,
        "the stem and this many first stages of an EfficientNet backbone keep their pretrained "
        "weights and BatchNorm statistics for the whole run (0 = all train)",
    )
    batch_size: int = _f(32, "images per optimisation step")
    lr: float = _f(3e-4, "peak learning rate of the backbone")
    head_lr: float = _f(1e-3, "peak learning rate of the head")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    warmup_epochs: float = _f(1.0, "linear warm-up length in epochs, then cosine decay")
    grad_clip: float = _f(1.0, "max gradient norm (0 = off)")
    loss: str = _f("focal", "focal | bce")
    focal_alpha: float = _f(0.35, "focal loss: weight of positives; negatives get 1 - alpha")
    focal_gamma: float = _f(2.5, "focal loss focusing parameter")
    balance: str = _f(
        "sampler", "class balancing inside each fold's training part: sampler | oversample | none"
    )
    augment: str = _f("standard", "training augmentation set: standard | none")
    label_smoothing: float = _f(
        0.0, "training targets moved to smoothing/2 and 1 - smoothing/2 (0 = hard labels)"
    )
    mixup_alpha: float = _f(
        0.0, "mixup: blend training slices and targets, weight ~ Beta(alpha, alpha) (0 = off)"
    )
    checkpoint: str = _f(
        "best",
        "epoch each fold keeps: best (best validation ROC-AUC of that fold; chosen on the "
        "patients it is then scored on, so OOF figures flatter) | last (no choice on them)",
    )
    hnm_epoch: int = _f(6, "epoch after which hard examples are mined (0 = never)")
    hnm_mode: str = _f("false_negatives", "false_negatives | false_positives | both")
    hnm_copies: int = _f(1, "extra copies of each mined example for the remaining epochs")
    hnm_threshold: float = _f(0.5, "probability threshold that defines a mistake when mining")
    study_label_weight: float = _f(
        0.25,
        "loss weight of a slice trained on its patient's positive label because it has no "
        "slice label of its own, in a run where other slices have one (1 = as a slice label, "
        "0 = left out); runs without any slice label train every slice at weight 1",
    )
    mask_loss_weight: float = _f(
        0.0,
        "weight of an auxiliary loss that trains a lesion map (a 1x1 conv on a backbone feature "
        "map, mask_layer) on the slices whose source has lesion masks; the map is dropped from "
        "the saved model (0 = off)",
    )
    mask_layer: str = _f(
        "last",
        "feature map the lesion map reads (mask_loss_weight, head=lesion_map): last (the last "
        "conv stage, stride 32) | stride16 (the last stage at stride 16, the grid Grad-CAM is "
        "drawn from by default) | stride8 (head=lesion_map only: the stride-8 stage beside the "
        "stride-16 one, a grid twice as fine again)",
    )
    lesion_cam_slices: int = _f(
        300,
        "lesion slices with a mask on which the finished run measures whether its Grad-CAM "
        "points at the lesion, out of fold and on held-out patients, at every CAM layer (0 = skip)",
    )
    cam_layer: str = _f(
        "stride16",
        "feature map the bundle's Grad-CAM is drawn from: stride16 (the last stage at stride "
        "16: a grid twice as fine, which pointed at PHE-SICH lesions 2-3 times as often in "
        "three measurements, benchmarks/RESULTS.md) | last (the last conv stage, stride 32) "
        "| map (head=lesion_map only: the feature map its cells are read from)",
    )
    # evaluation
    tta_views: tuple[str, ...] = _f(("identity", "hflip", "vflip"), "test-time views averaged")
    study_aggregation: str = _f(
        "mean",
        "patient score from slice scores: mean | max | topk_mean | noisy_or | auto (the one "
        "with the best out-of-fold patient ROC-AUC, recorded in the bundle)",
    )
    threshold_policy: str = _f(
        "youden",
        "the active OOF operating point: youden | max_f1 | sensitivity_at | specificity_at | "
        "min_cost (all five are stored)",
    )
    sensitivity_target: float = _f(0.95, "target of the sensitivity_at operating point")
    specificity_target: float = _f(0.90, "target of the specificity_at operating point")
    cost_ratio: float = _f(5.0, "cost of a missed stroke / cost of a false alarm (min_cost)")
    calibration: str = _f("temperature", "calibrator fitted on OOF: temperature | platt | none")
    uncertainty_share: float = _f(
        0.2, "share of OOF slices nearest the threshold flagged uncertain"
    )
    fold_spread_quantile: float = _f(0.9, "fold disagreement above this OOF quantile is flagged")
    # runtime
    device: str = _f("auto", "auto | cpu | cuda")
    num_workers: int = _f(0, "data loader worker processes")
    amp: bool = _f(True, "mixed precision on CUDA (ignored on CPU)")
    channels_last: bool = _f(True, "channels_last memory format")
    deterministic: bool = _f(True, "deterministic algorithms where torch allows")

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def digest(self) -> str:
        """Short hash of the resolved values; a resumed run must match it."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# Inference options, here so that `--help` need not import torch.
BACKENDS = ("auto", "torch", "onnx", "openvino")
# auto: the fastest variant that passed its check (ml.infer.openvino); f32 where exactness matters
PRECISIONS = ("auto", "f32", "bf16", "mixed", "int8")
VIEW_AGGREGATIONS = ("mean", "median", "max")
# How processes started by torchrun share a run (ml.train.distributed); not a field: it changes who
# computes, not the recipe, so a run can be resumed with another number of processes.
DISTRIBUTED_MODES = ("data", "folds")
DISTRIBUTED_TIMEOUT_MIN = 30.0  # the longest one process waits for another

CHOICES = {
    "cam_layer": ("last", "stride16", "map"),  # ml.explain.cam.LAYERS says what each means
    "mask_layer": ("last", "stride16", "stride8"),  # ml.models.network.LESION_LAYERS
    "head": ("pooled", "lesion_map"),  # ml.models.network.HEADS
    "pretrained": ("auto", "file", "hub", "packaged", "none"),
    "input_mode": ("slice", "neighbours", "neighbours_aligned"),
    "loss": ("focal", "bce"),
    "balance": ("sampler", "oversample", "none"),
    "augment": ("standard", "none"),
    "checkpoint": ("best", "last"),
    "hnm_mode": ("false_negatives", "false_positives", "both"),
    "study_aggregation": ("mean", "max", "topk_mean", "noisy_or", "auto"),
    "threshold_policy": ("max_f1", "youden", "sensitivity_at", "specificity_at", "min_cost"),
    "calibration": ("none", "temperature", "platt"),
    "device": ("auto", "cpu", "cuda"),
}


def check_config(cfg: TrainConfig) -> None:
    """Reject values that would only fail later, mid-training."""
    for name, allowed in CHOICES.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    if cfg.in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, not {cfg.in_chans}")
    if len(cfg.windows) not in (1, cfg.in_chans):
        raise ValueError(f"{len(cfg.windows)} windows cannot fill {cfg.in_chans} input channels")
    if cfg.input_mode != "slice" and (cfg.in_chans != 3 or len(cfg.windows) != 1):
        raise ValueError(f"input_mode={cfg.input_mode} needs in_chans=3 and a single window")
    if cfg.folds < 2:
        raise ValueError("folds must be at least 2")
    if not 0.0 <= cfg.holdout_frac < 0.5:
        raise ValueError("holdout_frac must be in [0, 0.5)")
    if cfg.epochs < 1 or not 0 <= cfg.freeze_epochs <= cfg.epochs:
        raise ValueError("need epochs >= 1 and 0 <= freeze_epochs <= epochs")
    if cfg.frozen_stages < 0:
        raise ValueError("frozen_stages must be >= 0")
    if cfg.pretrained == "file" and not cfg.pretrained_file:
        raise ValueError("pretrained=file needs pretrained_file")
    if not 0.0 <= cfg.label_smoothing < 1.0 or cfg.mixup_alpha < 0:
        raise ValueError("need 0 <= label_smoothing < 1 and mixup_alpha >= 0")
    if cfg.mask_layer == "stride8" and cfg.head != "lesion_map":
        raise ValueError("mask_layer=stride8 is read by head=lesion_map only")
    if cfg.cam_layer == "map" and cfg.head != "lesion_map":
        raise ValueError("cam_layer=map draws the map a head=lesion_map reads; this head has none")
    if cfg.mask_loss_weight < 0:
        raise ValueError("mask_loss_weight must be >= 0")
    if cfg.mask_loss_weight > 0 and cfg.mixup_alpha > 0:
        raise ValueError(
            "mask_loss_weight and mixup_alpha cannot be combined: mixup blends "
            "two slices, whose lesions have no one mask"
        )
    if not 0.0 <= cfg.study_label_weight <= 1.0:
        raise ValueError("study_label_weight must be in [0, 1]")
    if not 0.0 < cfg.focal_alpha < 1.0:
        raise ValueError("focal_alpha must be in (0, 1)")
    for name in ("sensitivity_target", "specificity_target", "uncertainty_share"):
        if not 0.0 < getattr(cfg, name) < 1.0:
            raise ValueError(f"{name} must be in (0, 1)")
    if not 0.0 < cfg.fold_spread_quantile <= 1.0 or cfg.cost_ratio <= 0:
        raise ValueError("need 0 < fold_spread_quantile <= 1 and cost_ratio > 0")
    if set(cfg.class_map.values()) - {0, 1}:
        raise ValueError("class_map values must be 0 (normal) or 1 (stroke)")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The overrides a named preset makes to the reference defaults."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text()) or {}


def make_config(preset: str = "reference", **overrides: Any) -> TrainConfig:
    """Reference defaults, then the preset, then explicit overrides."""
    values = load_preset(preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(values)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    hints = typing.get_type_hints(TrainConfig)
    return TrainConfig(**{k: _coerce(hints[k], v, k) for k, v in values.items()})


def load_config(path: Path) -> TrainConfig:
    return config_from_dict(yaml.safe_load(Path(path).read_text()) or {})


def save_config(cfg: TrainConfig, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def parse_override(text: str) -> tuple[str, Any]:
    """`field=value` from the command line; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ValueError(f"expected field=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    return key, yaml.safe_load(raw) if raw.strip() else None


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """Turn YAML values into the field's declared type (lists into tuples, ints into floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(hint, value, name)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list")
        inner = args[0]
        return tuple(_coerce(inner, v, name) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping")
        return {str(k): int(v) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if hint in (int, float, str):
        try:
            return hint(value)
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number", str: "text"}[hint]
            raise ValueError(f"{name} must be {kind}, not {value!r}") from None
    return value


def describe_fields() -> str:
    """One line per field, for `--help`."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<18} {f.metadata['help']} (default: {default})")
    return "\n".join(lines)
