"""ml.config: presets are data, overrides are typed, bad values fail before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import (
    TrainConfig,
    load_config,
    make_config,
    parse_override,
    preset_names,
    save_config,
)


def test_presets_exist_and_differ_only_in_data() -> None:
    assert set(preset_names()) >= {"reference", "cpu", "demo", "test"}
    reference = make_config("reference")
    assert reference.backbone == "tf_efficientnet_b3.ns_jft_in1k"
    assert (reference.image_size, reference.folds, reference.epochs) == (384, 5, 14)
    assert (reference.hnm_epoch, reference.batch_size) == (6, 32)
    assert (reference.focal_alpha, reference.focal_gamma) == (0.35, 2.5)
    cpu = make_config("cpu")
    assert (cpu.backbone, cpu.pretrained, cpu.image_size) == (
        "tf_efficientnet_lite0",
        "packaged",
        192,
    )
    assert (cpu.epochs, cpu.freeze_epochs, cpu.study_aggregation) == (3, 1, "auto")
    assert (cpu.frozen_stages, reference.frozen_stages) == (3, 0)


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"cpu.*demo.*reference.*test"):
        make_config("fast")


def test_overrides_are_coerced_to_field_types() -> None:
    key, value = parse_override("windows=[[40,80],[80,200],[600,2800]]")
    cfg = make_config("cpu", **{key: value}, epochs="3")
    assert cfg.windows == ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))
    assert cfg.epochs == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"loss": "hinge"}, "loss='hinge' is not one of focal, bce"),
        ({"epochs": "many"}, "epochs must be a whole number"),
        ({"colour": "red"}, "unknown config field"),
        ({"in_chans": 1, "windows": [[40, 80], [80, 200], [600, 2800]]}, "cannot fill"),
        ({"pretrained": "file"}, "needs pretrained_file"),
        ({"class_map": {"Normal": 0, "Stroke": 2}}, "0 \\(normal\\) or 1"),
    ],
)
def test_bad_values_fail_early(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config("cpu", **override)


def test_yaml_round_trip_keeps_the_digest(tmp_path: Path) -> None:
    cfg = make_config("demo", seed=5)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.digest() == cfg.digest() != make_config("demo").digest()


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        TrainConfig().epochs = 3  # type: ignore[misc]
