"""The network: a timm backbone and the reference head, one stroke logit per slice."""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
from torch import nn

from ml.config import TrainConfig
from ml.models import weights


@dataclass(frozen=True)
class BuiltModel:
    model: StrokeNet
    weights_source: str  # what initialised the backbone, recorded in the bundle
    mean: tuple[float, ...]  # input normalisation the backbone was trained with
    std: tuple[float, ...]


HEADS = ("pooled", "lesion_map")  # ml.config lists the same names for the `head` setting
LESION_LAYERS = ("last", "stride16", "stride8")  # ml.config's `mask_layer` choices
LSE_SHARPNESS = 5.0  # LesionPool: 1/r log mean exp(r x); large r -> the max cell, small -> mean


class Fuse(nn.Module):
    """The stride-8 stage's features beside the stride-16 stage's, repeated to the finer grid:
    one feature map on the stride-8 grid (a module, so that Grad-CAM can read its output)."""

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(coarse, size=fine.shape[-2:], mode="nearest")
        return torch.cat([fine, up], dim=1)


class LesionPool(nn.Module):
    """A lesion logit per cell of a feature map (1x1 conv -> ReLU -> Dropout -> 1x1 conv), and
    the slice's logit pooled from them by a log-sum-exp mean: near the largest cell's logit when
    one cell stands out, their mean when none does. The score is then made of the cells, so the
    map (and a Grad-CAM of the layer it reads) shows where it came from."""

    def __init__(self, channels: int, hidden: int, dropout: float, *, fine: int = 0) -> None:
        super().__init__()
        self.fuse = Fuse() if fine else None  # `fine` channels of the stride-8 stage join in
        self.cells = nn.Sequential(
            nn.Conv2d(channels + fine, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The slice's logit from the feature map the cells read (the fused one at stride8)."""
        return self.pool(self.cells(features))

    @staticmethod
    def pool(cells: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) cell logits -> (N, 1) slice logits."""
        flat = cells.flatten(1).float() * LSE_SHARPNESS
        pooled = torch.logsumexp(flat, dim=1, keepdim=True) - math.log(flat.shape[1])
        return pooled / LSE_SHARPNESS


class StrokeNet(nn.Module):
    """Backbone -> global average pool -> Linear(F, 512) -> ReLU -> Dropout -> Linear(512, 1).

    `forward` returns logits of shape (N, 1): one target column keeps Grad-CAM's
    `ClassifierOutputTarget(0)` meaningful for this single-logit model.

    With `lesion_map`, training also has a 1x1 conv that reads a lesion logit per cell of a
    backbone feature map (`forward(x, with_map=True)`), trained against lesion masks: the last
    one, or with `lesion_layer="stride16"` the last stage at stride 16 (the grid the product's
    Grad-CAM is drawn from). It only shapes the features: `LESION_MAP` keys are left out of
    saved weights.

    With `head="lesion_map"` the classifier is that map (`LesionPool`): the slice's logit is
    pooled from a lesion logit per cell of the `lesion_layer` feature map, and masks, where
    given, train the same map. At `stride16` the backbone's later stages are dropped (nothing
    reads them); `stride8` reads the stride-8 stage beside the stride-16 one (`Fuse`), a grid
    twice as fine again.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden: int = 512,
        dropout: float = 0.4,
        *,
        lesion_map: bool = False,
        lesion_layer: str = "last",
        frozen_stages: int = 0,
        head: str = "pooled",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; use {' or '.join(HEADS)}")
        if lesion_layer not in LESION_LAYERS:
            raise ValueError(
                f"unknown lesion map layer {lesion_layer!r}; use {', '.join(LESION_LAYERS)}"
            )
        if lesion_layer == "stride8" and head != "lesion_map":
            raise ValueError("a stride8 lesion map is read by the lesion_map head only")
        self.backbone = backbone
        self.map_head = head == "lesion_map"
        self.fine_stage, fine = -1, 0
        if lesion_layer == "stride8":
            name, fine = stage_at(backbone, 8)
            self.fine_stage = int(name.rsplit(".", 1)[1])
        if self.map_head and lesion_layer != "last":
            cut_after_stride16(backbone)
        if frozen_stages:
            early_stages(backbone, frozen_stages)  # fails here, not at the first epoch
        self.frozen_stages = frozen_stages
        self.head: nn.Module = nn.Sequential(
            nn.Linear(backbone.num_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
        if self.map_head:
            self.head = LesionPool(backbone.num_features, hidden, dropout, fine=fine)
        self.lesion_map, self.lesion_stage = None, ""
        if lesion_map and not self.map_head:
            channels = backbone.num_features
            if lesion_layer == "stride16":
                self.lesion_stage, channels = stage_at(backbone, 16)
            self.lesion_map = nn.Conv2d(channels, 1, 1)
        self.backbone_frozen = False

    def forward(
        self, x: torch.Tensor, with_map: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.map_head:
            cells = self.head.cells(self._map_features(x))
            logits = self.head.pool(cells)
            return (logits, cells) if with_map else logits
        if not with_map:
            return self.head(self.backbone(x))
        if self.lesion_map is None:
            raise ValueError("this model was built without a lesion map")
        if not self.lesion_stage:
            features = self.backbone.forward_features(x)
            mapped = features
        else:  # the stage's output, caught on the way (a name, not a second reference to it)
            caught: list[torch.Tensor] = []
            stage = self.backbone.get_submodule(self.lesion_stage)
            hook = stage.register_forward_hook(lambda _m, _i, out: caught.append(out))
            try:
                features = self.backbone.forward_features(x)
            finally:
                hook.remove()
            mapped = caught[-1]
        logits = self.head(self.backbone.forward_head(features))
        return logits, self.lesion_map(mapped)

    def _map_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map the lesion-map head reads: the backbone's output, or at stride8 that
        fused with the stride-8 stage's output, caught on the way through the stages."""
        if self.head.fuse is None:
            return self.backbone.forward_features(x)
        net = self.backbone
        x = net.bn1(net.conv_stem(x))
        fine = x
        for index, block in enumerate(net.blocks):
            x = block(x)
            if index == self.fine_stage:
                fine = x
        return self.head.fuse(fine, net.bn2(net.conv_head(x)))

    def freeze_backbone(self, frozen: bool) -> None:
        """Frozen: no gradients, and BatchNorm statistics stay those of the pretrained weights.
        The first `frozen_stages` stages stay frozen either way."""
        self.backbone_frozen = frozen
        for parameter in self.backbone.parameters():
            parameter.requires_grad = not frozen
        for stage in self._early():
            for parameter in stage.parameters():
                parameter.requires_grad = False
        self.train(self.training)

    def train(self, mode: bool = True) -> StrokeNet:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        for stage in self._early():
            stage.eval()
        return self

    def _early(self) -> list[nn.Module]:
        # Looked up each time: SyncBatchNorm conversion replaces the BatchNorm modules.
        return early_stages(self.backbone, self.frozen_stages) if self.frozen_stages else []


def early_stages(backbone: nn.Module, stages: int) -> list[nn.Module]:
    """The stem and the first `stages` stages of an EfficientNet backbone, in order."""
    if not all(hasattr(backbone, name) for name in ("conv_stem", "bn1", "blocks")):
        raise ValueError(
            f"{type(backbone).__name__} has no EfficientNet stem and stages to keep apart; "
            "frozen_stages and the mixed precision work on EfficientNet backbones only"
        )
    if not 0 < stages < len(backbone.blocks):
        raise ValueError(f"stages must be between 1 and {len(backbone.blocks) - 1}, not {stages}")
    return [backbone.conv_stem, backbone.bn1, *backbone.blocks[:stages]]


def cut_after_stride16(backbone: nn.Module) -> None:
    """Drop an EfficientNet's stages after its last stride-16 one, and the 1x1 conv that
    followed them, so that `forward_features` ends there (`feature_info` and `num_features`
    follow)."""
    if not all(hasattr(backbone, name) for name in ("blocks", "conv_head", "bn2")):
        raise ValueError(
            f"{type(backbone).__name__} cannot end at its stride-16 stage (EfficientNet "
            "backbones only); use the layer 'last'"
        )
    name, channels = stage_at(backbone, 16)
    kept = int(name.rsplit(".", 1)[1]) + 1
    backbone.blocks = backbone.blocks[:kept]
    backbone.conv_head, backbone.bn2 = nn.Identity(), nn.Identity()
    backbone.feature_info = [
        f
        for f in backbone.feature_info
        if f["module"].startswith("blocks.") and int(f["module"].split(".")[1]) < kept
    ]
    backbone.num_features = channels


def stage_at(backbone: nn.Module, reduction: int) -> tuple[str, int]:
    """Name and channel count of the last convolutional feature stage `backbone` reports at
    `reduction` (timm's `feature_info`: `blocks.4` of an EfficientNet at 16). A transformer's
    blocks report a reduction too, but have no spatial grid: ValueError, as for none."""
    feature_info = getattr(backbone, "feature_info", None)
    stages = [
        f
        for f in (feature_info if isinstance(feature_info, list) else [])
        if f.get("reduction") == reduction and "module" in f
    ]
    if not stages or not any(
        isinstance(m, nn.Conv2d) for m in backbone.get_submodule(stages[-1]["module"]).modules()
    ):
        raise ValueError(
            f"backbone {type(backbone).__name__} reports no convolutional stage at stride "
            f"{reduction}; use the layer 'last'"
        )
    return stages[-1]["module"], int(stages[-1]["num_chs"])


def build_model(
    backbone: str,
    *,
    in_chans: int = 3,
    pretrained: str = "none",
    pretrained_file: str | None = None,
    head_hidden: int = 512,
    dropout: float = 0.4,
    lesion_map: bool = False,
    lesion_layer: str = "last",
    frozen_stages: int = 0,
    head: str = "pooled",
) -> BuiltModel:
    """Create the backbone by timm name, initialise it from the requested source, add the head."""
    if not timm.is_model(weights.base_name(backbone)):
        raise ValueError(
            f"unknown backbone {backbone!r}; use a timm model name, e.g. tf_efficientnet_lite0, "
            "tf_efficientnet_b3.ns_jft_in1k (timm.list_models() lists them all)"
        )
    source = weights.resolve_source(backbone, pretrained, pretrained_file)
    if source == "hub":
        net, description = weights.load_hub(backbone, in_chans)
    else:
        net = timm.create_model(
            weights.base_name(backbone), pretrained=False, num_classes=0, in_chans=in_chans
        )
        if source == "packaged":
            description = weights.load_packaged(net, backbone)
        elif source == "file":
            description = weights.load_file(net, pretrained_file or "")
        else:
            description = "none"
    cfg = timm.get_pretrained_cfg(backbone) or net.pretrained_cfg
    mean, std = _normalisation(cfg, in_chans)
    model = StrokeNet(
        net,
        head_hidden,
        dropout,
        lesion_map=lesion_map,
        lesion_layer=lesion_layer,
        frozen_stages=frozen_stages,
        head=head,
    )
    return BuiltModel(model, description, mean, std)


def build_from_config(cfg: TrainConfig) -> BuiltModel:
    """The model a training config describes, with its pretrained backbone."""
    return build_model(
        cfg.backbone,
        in_chans=cfg.in_chans,
        pretrained=cfg.pretrained,
        pretrained_file=cfg.pretrained_file,
        head_hidden=cfg.head_hidden,
        dropout=cfg.dropout,
        lesion_map=cfg.mask_loss_weight > 0,
        lesion_layer=cfg.mask_layer,
        frozen_stages=cfg.frozen_stages,
        head=cfg.head,
    )


def _normalisation(cfg: object, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std from the backbone's pretrained config, averaged for one input channel."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    mean = tuple(float(v) for v in get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in get("std", (0.229, 0.224, 0.225)))
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean, std


LESION_MAP = "lesion_map."  # prefix of the training-only lesion map's weights


def head_parameters(model: StrokeNet) -> list[nn.Parameter]:
    """The classification head's, and the lesion map's where the model has one."""
    extra = list(model.lesion_map.parameters()) if model.lesion_map is not None else []
    return list(model.head.parameters()) + extra


def backbone_parameters(model: StrokeNet) -> list[nn.Parameter]:
    return list(model.backbone.parameters())
