"""Where an ensemble looks when it scores a slice: class-activation maps of the stroke logit.

`explain` averages one map per fold model and test-time view, each flipped back onto the input
grid, so the heat map belongs to the ensemble's score and not to one fold or one orientation.
`overlay_png` draws it over the slice the model saw, and `faithfulness` puts a plain number on how
much the map means: how far the ensemble's probability falls when the hottest pixels are hidden,
next to hiding as many random pixels.

A heat map shows what the network used, not where a lesion is: research software, not for
clinical use.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timm.models.efficientnet import EfficientNet
from torch import nn

from ml.data.tta import build_views
from ml.models.network import StrokeNet, stage_at

# gradcam: feature maps weighted by the mean gradient of the stroke logit. gradcam++: weighted by
# positive gradients, pixel by pixel, which can show several lesions better. eigencam: the first
# principal component of the feature maps, with no gradient at all: fast, but it is not specific
# to the stroke score, and the sign of a principal component is arbitrary, so it can light up the
# background (pytorch-grad-cam 1.5.7 does not correct that sign).
METHODS = ("gradcam", "gradcam++", "eigencam")
_CAM_CLASSES: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "eigencam": EigenCAM,
}
_GRADIENT_FREE = frozenset({"eigencam"})  # maps built from activations alone, no backward pass

# The stroke logit is column 0 of the model's (N, 1) output, so the CAM follows
# ClassifierOutputTarget(0), which returns that logit unchanged. Not BinaryClassifierOutputTarget:
# it was written for one-logit models too, but returns `logit * (+1 if category == 1 else -1)`,
# so BinaryClassifierOutputTarget(0) -- the natural-looking choice for "column 0" -- negates the
# logit, and the map shows the evidence *against* stroke. tests/unit/test_cam.py trains a model
# on phantoms and checks that flipping this sign sends the heat map's peak off the lesion.
STROKE_LOGIT = ClassifierOutputTarget(0)

View = Callable[[torch.Tensor], torch.Tensor]

RANDOM_DRAWS = 5  # random masks averaged in `faithfulness`; the spread of one draw is large

# Which feature map the CAM is built from. last: the backbone's last convolutional stage (stride
# 32: a 6 x 6 grid at 192 px, cells larger than most haematomas). stride16: the last stage at
# stride 16 (timm's `feature_info`, `blocks.4` of an EfficientNet), a grid twice as fine whose
# features are a little less specific to the score. benchmarks/RESULTS.md compares them against
# lesion masks. ml.config lists the same names for the `cam_layer` setting (it loads no torch).
# map: the feature map a lesion-map head (`head: lesion_map`) reads its cells from; at its
# `stride8` the stride-8 and stride-16 stages side by side, on the finer grid.
LAYERS = ("last", "stride16", "map")


def target_layer(model: StrokeNet, layer: str = "last") -> nn.Module:
    """The layer whose activations (and gradients) the map is built from (see LAYERS).

    `layer="stride16"`: the last feature stage timm reports at reduction 16; ValueError for a
    backbone that reports none.

    `layer="last"`: the last conv stage.

    Grad-CAM weighs a layer's feature maps by the gradient of the score. The last convolutional
    layer before global pooling has the most class-specific features while it still keeps a
    spatial grid; every later layer (pooling, the head) has no grid left to show.

    - timm EfficientNets: `backbone.conv_head`, the 1x1 conv to `num_features` channels that
      feeds the pooling (its BatchNorm and activation follow in `bn2`).
    - other timm backbones: the last feature stage timm reports in `feature_info` (`layer4` of
      a ResNet, `stages.3` of a ConvNeXt), whose output is the last spatial feature map. Not
      simply the last `nn.Conv2d` registered: that can be a residual shortcut's downsampling
      conv (timm's ResNets register it after the block's main convs), or a conv applied after
      pooling (MobileNetV3's `conv_head`, on a 1 x 1 grid).
    - backbones without `feature_info`: their last registered `nn.Conv2d`.

    Transformer backbones have no convolutional stage (their only conv is the patch embedding,
    whose map would say nothing about the score): they raise ValueError.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown CAM layer {layer!r}; choose one of {', '.join(LAYERS)}")
    backbone = model.backbone
    if layer == "map":
        if not getattr(model, "map_head", False):
            raise ValueError("the CAM layer 'map' needs a lesion-map head; this model has none")
        if model.head.fuse is not None:
            return model.head.fuse
        return target_layer(model, "last")  # the backbone's output is what the cells read
    if layer == "stride16":
        return backbone.get_submodule(stage_at(backbone, 16)[0])
    if isinstance(backbone, EfficientNet) and isinstance(
        getattr(backbone, "conv_head", None), nn.Conv2d
    ):
        return backbone.conv_head
    feature_info = getattr(backbone, "feature_info", None)
    if isinstance(feature_info, list) and feature_info and "module" in feature_info[-1]:
        stage = backbone.get_submodule(feature_info[-1]["module"])
        if any(isinstance(m, nn.Conv2d) for m in stage.modules()):
            return stage
    else:
        convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
        if convs:
            return convs[-1]
    raise ValueError(
        f"backbone {type(backbone).__name__} has no convolutional last stage to build a "
        "class-activation map from; choose a convolutional backbone (EfficientNet, ResNet, "
        "ConvNeXt, ...)"
    )


def explain(
    models: Sequence[StrokeNet],
    x: torch.Tensor,
    *,
    method: str = "gradcam",
    views: Sequence[str] = ("identity", "hflip", "vflip"),
    layer: str = "last",
) -> np.ndarray:
    """Heat map of the ensemble's stroke logit for one normalised input `x` (C, H, W), built
    from the feature map `layer` names (see LAYERS).

    For every fold model and every view, the CAM is computed on the viewed input and flipped back
    (each view is its own inverse), then the maps are averaged. pytorch-grad-cam scales each map
    to [0, 1] before the average, so every fold and view weighs the same. Returns float32 (H, W)
    scaled so that its maximum is 1; all zeros when no map has any positive heat. The models
    must be in eval mode: in training mode BatchNorm would update its statistics during the CAM
    and dropout would make the map random. Any parameter gradients the CAM's backward pass leaves
    are cleared again.
    """
    cam_class = _cam_class(method)
    view_names = tuple(views)
    transforms = build_views(view_names)
    _check_models(models)
    if x.ndim != 3:
        raise ValueError(f"x must be one normalised input of shape (C, H, W), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    total = np.zeros((height, width), dtype=np.float64)
    # Run outside any inference_mode/no_grad of the caller: gradient methods need autograd.
    with torch.inference_mode(False):
        batch = x.detach().clone().unsqueeze(0)  # a normal tensor even if x is an inference one
        for model in models:
            layers = [target_layer(model, layer)]
            total += _model_maps(model, batch, cam_class, layers, transforms, method)
    heat = total / (len(models) * len(transforms))
    peak = float(heat.max())
    if peak > 0:
        heat = heat / peak
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def overlay_png(windowed: np.ndarray, heatmap: np.ndarray, *, opacity: float = 0.4) -> bytes:
    """PNG of the slice in grey with the heat map in colour (JET, red = hot) blended over it.

    `windowed` is the uint8 slice as the model saw it, (H, W) or (H, W, 1 | 3); of three
    channels (stacked windows) the first is shown. The heat map, values in [0, 1], is resized to
    the slice. `opacity` 0 gives the slice alone, 1 the colour map alone.
    """
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(
            f"opacity must lie in [0, 1] (0 = slice only, 1 = map only), got {opacity}"
        )
    grey = _grey_slice(windowed)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap must be a 2-D (h, w) array, got shape {heat.shape}")
    if not np.all(np.isfinite(heat)) or heat.min() < 0.0 or heat.max() > 1.0:
        raise ValueError("heatmap values must be finite and in [0, 1], as explain returns them")
    height, width = grey.shape
    if heat.shape != (height, width):
        heat = np.clip(cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
    colour = _jet(heat).astype(np.float32)
    slice_rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    blended = (1.0 - opacity) * slice_rgb + opacity * colour
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def heatmap_png(heatmap: np.ndarray) -> bytes:
    """The heat map alone as an RGB PNG in the colours `overlay_png` blends.

    Laid over the slice with CSS opacity `o`, the browser shows what `overlay_png(..., opacity=o)`
    would draw, so a viewer can change the opacity without asking the server again.
    """
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0 or not np.all(np.isfinite(heat)):
        raise ValueError(f"heatmap must be a finite 2-D (h, w) array, got shape {heat.shape}")
    buffer = io.BytesIO()
    Image.fromarray(_jet(np.clip(heat, 0.0, 1.0)), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _jet(heat: np.ndarray) -> np.ndarray:
    """uint8 RGB colours of a [0, 1] map, JET (red = hot)."""
    colour_bgr = cv2.applyColorMap(np.rint(heat * 255.0).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(colour_bgr, cv2.COLOR_BGR2RGB)


def faithfulness(
    models: Sequence[StrokeNet],
    x: torch.Tensor,
    heatmap: np.ndarray,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    views: Sequence[str] = ("identity",),
) -> dict[str, float]:
    """How much the heat map means, as a deletion test on one input.

    The ensemble's stroke probability (mean over models and views of sigmoid(logit)) of `x`;
    again with the hottest `fraction` of pixels hidden (`masked_top`); and with as many pixels
    hidden at random (`masked_random`, the mean over RANDOM_DRAWS draws seeded by `seed`).
    `drop_* = probability - masked_*`: a map that points at what the model uses has
    drop_top well above drop_random.

    Hidden pixels take a neutral tissue value: per channel, the median of the pixels strictly
    between the channel's minimum and maximum, i.e. of the in-window tissue, leaving out air
    and bone clipped at the window's ends. Not zero and not the image mean: in a brain window
    the mean of a CT slice, pulled down by the air around the head, sits near the density of an
    infarct, and black is darker still, so such a mask would itself look like a lesion; the
    median tissue value looks like ordinary brain. `heatmap` must have the input's (H, W);
    the `fraction` returned is the share of pixels actually hidden (a whole number of them).
    """
    _check_models(models)
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    if x.ndim != 3:
        raise ValueError(f"x must be one normalised input of shape (C, H, W), got {tuple(x.shape)}")
    heat = np.asarray(heatmap, dtype=np.float64)
    height, width = x.shape[-2:]
    if not np.all(np.isfinite(heat)):
        raise ValueError("heatmap has NaN or infinite values; pass the map explain() returned")
    if heat.shape != (height, width):
        raise ValueError(
            f"heatmap has shape {heat.shape} but the input is {height} x {width}; "
            "pass the map explain() returned for this input"
        )
    transforms = build_views(tuple(views))
    image = x.detach().float().cpu().clone()
    neutral = _neutral_values(image)
    count = max(1, round(float(fraction) * height * width))

    top = np.argsort(-heat.reshape(-1), kind="stable")[:count]
    rng = np.random.default_rng(seed)
    random_masks = [
        rng.choice(height * width, size=count, replace=False) for _ in range(RANDOM_DRAWS)
    ]
    batch = torch.stack(
        [image, _masked(image, top, neutral)] + [_masked(image, m, neutral) for m in random_masks]
    )
    probabilities = _ensemble_probability(models, batch, transforms)
    probability = float(probabilities[0])
    masked_top = float(probabilities[1])
    masked_random = float(probabilities[2:].mean())
    return {
        "probability": probability,
        "masked_top": masked_top,
        "masked_random": masked_random,
        "drop_top": probability - masked_top,
        "drop_random": probability - masked_random,
        "fraction": count / (height * width),
    }


def _cam_class(method: str) -> type[BaseCAM]:
    if method not in _CAM_CLASSES:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    return _CAM_CLASSES[method]


def _check_models(models: Sequence[StrokeNet]) -> None:
    if len(models) == 0:
        raise ValueError("no models given; pass the ensemble's fold models")
    for model in models:
        if model.training:
            raise ValueError(
                "a model is in training mode; call model.eval() before explaining it, "
                "so that BatchNorm statistics stay fixed and dropout is off"
            )


def _model_maps(
    model: StrokeNet,
    batch: torch.Tensor,
    cam_class: type[BaseCAM],
    layers: list[nn.Module],
    transforms: Sequence[View],
    method: str,
) -> np.ndarray:
    """Sum over views of one model's CAM, each flipped back onto the input grid."""
    total = np.zeros(batch.shape[-2:], dtype=np.float64)
    finished = False
    with cam_class(model=model, target_layers=layers) as cam:
        for view in transforms:
            viewed = view(batch).detach().clone()
            if method in _GRADIENT_FREE:
                with torch.no_grad():  # nothing to backpropagate; no graph is kept
                    maps = cam(input_tensor=viewed, targets=[STROKE_LOGIT])
            else:
                # The input requires grad so that the target layer's output does too even when
                # the backbone's weights are frozen; otherwise no gradient would reach the hook.
                viewed.requires_grad_(True)
                with torch.enable_grad():
                    maps = cam(input_tensor=viewed, targets=[STROKE_LOGIT])
            # Views are involutions on (..., H, W) tensors: applying one again un-flips the map.
            total += view(torch.from_numpy(maps)).numpy()[0]
        finished = True
    if not finished:
        # pytorch-grad-cam 1.5.7's __exit__ prints and swallows an IndexError raised inside the
        # `with` block; a map summed over only some views must not pass for a whole one.
        raise RuntimeError("computing the class-activation map failed with an IndexError")
    model.zero_grad(set_to_none=True)  # pytorch-grad-cam's backward fills parameter .grad
    return total


def _grey_slice(windowed: np.ndarray) -> np.ndarray:
    array = np.asarray(windowed)
    if array.dtype != np.uint8:
        raise ValueError(f"windowed must be the uint8 slice the model saw, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] in (1, 3):
        return array[..., 0]
    if array.ndim == 2:
        return array
    raise ValueError(f"windowed must have shape (H, W) or (H, W, 1 | 3), got {array.shape}")


def _neutral_values(image: torch.Tensor) -> torch.Tensor:
    """Per channel, the median of the in-window pixels; the channel mean if there are none."""
    values = []
    for channel in image:
        low, high = channel.min(), channel.max()
        inside = channel[(channel > low) & (channel < high)]
        values.append(inside.median() if inside.numel() else channel.mean())
    return torch.stack(values)


def _masked(image: torch.Tensor, flat_indices: np.ndarray, neutral: torch.Tensor) -> torch.Tensor:
    masked = image.clone(memory_format=torch.contiguous_format)
    flat = masked.view(masked.shape[0], -1)  # contiguous, so a view: writes reach `masked`
    index = torch.from_numpy(np.asarray(flat_indices, dtype=np.int64))
    flat[:, index] = neutral[:, None]
    return masked


def _ensemble_probability(
    models: Sequence[StrokeNet], batch: torch.Tensor, transforms: Sequence[View]
) -> np.ndarray:
    """Mean over models and views of sigmoid(stroke logit), as the ensemble scores a slice."""
    per_model = []
    with torch.inference_mode():
        for model in models:
            device = next(model.parameters()).device
            inputs = batch.to(device)
            scores = [torch.sigmoid(model(view(inputs)).float()).reshape(-1) for view in transforms]
            per_model.append(torch.stack(scores).mean(dim=0).cpu())
    return torch.stack(per_model).mean(dim=0).numpy()
