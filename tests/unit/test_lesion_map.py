"""Masks as extra supervision (`mask_loss_weight`): the lesion map's loss, masks that move with
their slice, and a model that trains with the map and is saved without it."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from ml.bundle import load_bundle
from ml.config import make_config
from ml.data.masks import lesion_masks
from ml.data.sources import Source
from ml.data.transforms import SliceDataset
from ml.errors import UserError
from ml.explain.cam import target_layer
from ml.explain.lesion import layer_grid
from ml.infer.predictor import Predictor
from ml.models.network import LSE_SHARPNESS, LesionPool, build_model
from ml.train.loop import lesion_map_loss
from ml.train.pipeline import prepare, run_training


def test_the_map_that_matches_the_mask_has_the_lower_loss() -> None:
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, 0, :8, :8] = 1.0  # a lesion in the top-left quarter
    known = torch.tensor([True, True])
    right = torch.full((2, 1, 2, 2), -6.0)
    right[0, 0, 0, 0] = 6.0
    wrong = torch.full((2, 1, 2, 2), -6.0)
    wrong[0, 0, 1, 1] = 6.0
    assert lesion_map_loss(right, masks, known) < 0.1 < lesion_map_loss(wrong, masks, known)


def test_slices_without_a_mask_teach_the_map_nothing() -> None:
    logits = torch.zeros(2, 1, 2, 2, requires_grad=True)
    masks = torch.zeros(2, 1, 8, 8)
    one_known = torch.tensor([True, False])
    before = lesion_map_loss(logits, masks, one_known).detach()
    masks[1] = 1.0  # the unknown slice's mask changes: the loss does not
    assert torch.equal(lesion_map_loss(logits, masks, one_known).detach(), before)
    none_known = lesion_map_loss(logits, masks, torch.tensor([False, False]))
    none_known.backward()
    assert none_known.detach().item() == 0.0 and not logits.grad.any()


def test_the_mask_moves_with_its_slice() -> None:
    image = np.zeros((32, 32, 1), np.uint8)
    image[4:10, 2:8] = 200  # a bright lesion, left of centre
    mask = (image[..., 0] > 0).astype(np.uint8)
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    data = SliceDataset(
        image[None],
        np.array([1]),
        [0],
        in_chans=1,
        mean=(0.0,),
        std=(1.0,),
        augment=flip,
        masks=mask[None],
        mask_known=np.array([True]),
    )
    x, label, _, moved, known = data[0]
    assert moved.shape == (1, 32, 32) and bool(known) and float(label) == 1.0
    assert torch.equal(moved[0] > 0, x[0] > 0.5)  # still over the lesion
    assert moved[0, 4:10, 24:30].all() and not moved[0, :, :16].any()  # on the right now
    plain = SliceDataset(image[None], np.array([1]), [0], in_chans=1, mean=(0.0,), std=(1.0,))
    assert len(plain[0]) == 3


def test_records_without_a_mask_are_unknown(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.pad(np.ones((4, 4), np.uint8) * 255, 6)).save(tmp_path / "m.png")

    class Record:
        def __init__(self, mask: Path | None) -> None:
            self.mask = mask

    frames = np.array([[1.0, 0.0, 0.0]] * 2)
    masks, known = lesion_masks([Record(tmp_path / "m.png"), Record(None)], frames, 16)
    assert known.tolist() == [True, False]
    assert masks[0, 6:10, 6:10].all() and masks[0].sum() == 16 and not masks[1].any()


def test_the_map_reads_the_classifier_features() -> None:
    model = build_model("test_efficientnet", head_hidden=8, lesion_map=True).model.eval()
    x = torch.randn(2, 3, 64, 64)
    logits, lesion = model(x, with_map=True)
    assert lesion.shape == (2, 1, 2, 2)  # one cell per 32 px
    assert torch.allclose(logits, model(x), atol=1e-6)
    plain = build_model("test_efficientnet", head_hidden=8).model
    with pytest.raises(ValueError, match="without a lesion map"):
        plain(x, with_map=True)


def test_a_stride16_map_reads_the_finer_stage_and_leaves_no_hook() -> None:
    net = build_model("test_efficientnet", head_hidden=8, lesion_map=True, lesion_layer="stride16")
    model = net.model.eval()
    x = torch.randn(2, 3, 64, 64)
    logits, lesion = model(x, with_map=True)
    assert lesion.shape == (2, 1, 4, 4)  # one cell per 16 px
    assert torch.allclose(logits, model(x), atol=1e-6)
    stage = model.backbone.get_submodule(model.lesion_stage)
    assert not stage._forward_hooks  # the hook that caught the stage's output is gone
    # The map's gradient reaches the stage it reads, and no parameter is registered twice.
    model(x, with_map=True)[1].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.parameters())
    names = [n for n, _ in model.named_parameters() if not n.startswith("lesion_map.")]
    assert names == [
        n for n, _ in build_model("test_efficientnet", head_hidden=8).model.named_parameters()
    ]
    with pytest.raises(ValueError, match="unknown lesion map layer"):
        build_model("test_efficientnet", lesion_map=True, lesion_layer="stride4")
    assert make_config("test", mask_layer="stride16").mask_layer == "stride16"
    with pytest.raises(ValueError, match="mask_layer"):
        make_config("test", mask_layer="stride4")


def test_the_pool_follows_one_standing_out_cell_and_is_the_mean_of_a_flat_map() -> None:
    flat = torch.full((1, 1, 4, 4), -2.0)
    assert LesionPool.pool(flat).item() == pytest.approx(-2.0, abs=1e-5)
    scores = []
    for lesion in (0.0, 4.0, 8.0):
        cells = flat.clone()
        cells[0, 0, 1, 2] = lesion  # one cell of sixteen
        scores.append(LesionPool.pool(cells).item())
    assert scores[0] < scores[1] < scores[2]
    # Far above the rest, the slice's logit trails that cell by log(16) / r only.
    assert scores[2] == pytest.approx(8.0 - np.log(16) / LSE_SHARPNESS, abs=1e-3)


def test_a_lesion_map_head_scores_the_slice_from_its_cells() -> None:
    torch.manual_seed(0)
    model = build_model("test_efficientnet", head_hidden=8, head="lesion_map").model.eval()
    x = torch.randn(2, 3, 64, 64)
    logits, cells = model(x, with_map=True)
    assert cells.shape == (2, 1, 2, 2) and torch.equal(logits, model(x))
    assert torch.allclose(logits, LesionPool.pool(cells), atol=1e-6)
    with pytest.raises(ValueError, match="unknown head"):
        build_model("test_efficientnet", head="attention")
    assert make_config("test", head="lesion_map").head == "lesion_map"
    with pytest.raises(ValueError, match="head"):
        make_config("test", head="attention")


def test_at_stride16_the_head_ends_the_backbone_there() -> None:
    torch.manual_seed(0)
    built = build_model(
        "test_efficientnet", head_hidden=8, head="lesion_map", lesion_layer="stride16"
    )
    model = built.model.eval()
    x = torch.randn(2, 3, 64, 64)
    logits, cells = model(x, with_map=True)
    assert cells.shape == (2, 1, 4, 4)  # one cell per 16 px
    assert torch.allclose(logits, model(x), atol=1e-6)
    # The stages after it are gone, not merely unused: every parameter gets a gradient.
    assert len(model.backbone.blocks) == 4
    assert [f["reduction"] for f in model.backbone.feature_info] == [2, 4, 8, 16]
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # Grad-CAM's two layers are then the same stage, the one the cells read.
    assert target_layer(model, "last") is target_layer(model, "stride16")
    assert target_layer(model, "stride16") is model.backbone.blocks[3]
    with pytest.raises(ValueError, match="EfficientNet backbones only"):
        build_model("test_resnet", head="lesion_map", lesion_layer="stride16")


def test_at_stride8_the_head_reads_the_finer_stage_beside_the_coarser(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(
        "test_efficientnet", head_hidden=8, head="lesion_map", lesion_layer="stride8"
    ).model.eval()
    x = torch.randn(2, 3, 64, 64)
    logits, cells = model(x, with_map=True)
    assert cells.shape == (2, 1, 8, 8)  # one cell per 8 px
    assert torch.allclose(logits, model(x), atol=1e-6)
    logits.sum().backward()  # the stride-8 stage (blocks.2) and the later ones both count
    for index in (2, 3):
        assert any(p.grad.abs().sum() > 0 for p in model.backbone.blocks[index].parameters())
    # Grad-CAM's `map` layer is the fused map, on the finer grid.
    assert target_layer(model, "map") is model.head.fuse
    assert layer_grid(model, "map", x[0]) == (8, 8)
    assert layer_grid(model, "stride16", x[0]) == (4, 4)
    # It exports: ONNX Runtime gives torch's logits.
    import onnxruntime

    from ml.infer.onnx import export_module

    export_module(model, x, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    (exported,) = session.run(None, {"input": x.numpy()})
    assert np.allclose(exported, logits.detach().numpy(), atol=1e-4)


def test_a_finer_map_and_its_cam_layer_need_the_lesion_map_head() -> None:
    with pytest.raises(ValueError, match="lesion_map head only"):
        build_model("test_efficientnet", lesion_map=True, lesion_layer="stride8")
    with pytest.raises(ValueError, match="head=lesion_map only"):
        make_config("test", mask_layer="stride8")
    with pytest.raises(ValueError, match="cam_layer=map"):
        make_config("test", cam_layer="map")
    plain = build_model("test_efficientnet", head_hidden=8).model
    with pytest.raises(ValueError, match="needs a lesion-map head"):
        target_layer(plain, "map")
    assert make_config("test", head="lesion_map", mask_layer="stride8", cam_layer="map")


def test_the_card_names_the_map_each_head_reads() -> None:
    from ml.evaluate.model_card import _head_words

    assert _head_words(make_config("test")) == []
    for layer, words in (
        ("last", "of the last feature map"),
        ("stride16", "of the stride-16 stage (later"),
        ("stride8", "of the stride-8 stage beside the stride-16 one"),
    ):
        (line,) = _head_words(make_config("test", head="lesion_map", mask_layer=layer))
        assert line.startswith("- Head: a lesion logit per cell") and words in line


def test_mask_loss_and_mixup_cannot_be_combined() -> None:
    with pytest.raises(ValueError, match="mixup"):
        make_config("test", mask_loss_weight=1.0, mixup_alpha=0.2)
    with pytest.raises(ValueError, match="mask_loss_weight"):
        make_config("test", mask_loss_weight=-1.0)


def test_a_lesion_map_without_any_mask_is_refused(two_sources: dict[str, Path]) -> None:
    cfg = make_config("test", mask_loss_weight=1.0)
    with pytest.raises(UserError, match="none of the data has one"):
        prepare(two_sources["folder"], cfg, cache_dir=None, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["pooled", "lesion_map"])
def test_a_run_trains_the_map_and_saves_the_plain_model(
    two_sources: dict[str, Path], tmp_path: Path, head: str
) -> None:
    out = tmp_path / "bundle"
    # Two folds of one epoch, the backbone frozen: the map and the head still train. With the
    # lesion-map head the map is the head, read at stride 16 from a shortened backbone.
    cfg = make_config(
        "test",
        mask_loss_weight=1.0,
        hnm_epoch=0,
        folds=2,
        epochs=1,
        lesion_cam_slices=0,
        head=head,
        mask_layer="stride16" if head == "lesion_map" else "last",
    )
    sources = [
        Source("folder", two_sources["folder"], two_sources["labels"]),
        Source("site", two_sources["site"]),
    ]
    run_training(sources, out, cfg, cache_dir=tmp_path / "cache", progress=False)
    epochs = [json.loads(line) for line in (out / "logs" / "fold_1.jsonl").read_text().splitlines()]
    assert all(row["lesion_map_loss"] > 0 for row in epochs)  # the map trained every epoch
    predictor = Predictor(load_bundle(out), backend="torch")  # strict load: no map weights
    image = sorted((two_sources["folder"] / "Stroke").glob("*.png"))[0]
    assert 0.0 <= predictor.predict([image])[0].probability <= 1.0
    assert all(m.map_head == (head == "lesion_map") for m in predictor.torch_models())
    card = (out / "model_card.md").read_text()
    assert "Lesion masks train the map" in card
    assert ("Head: a lesion logit per cell of the stride-16 stage" in card) == (head != "pooled")
    if head == "lesion_map":  # its pooling exports, and ONNX Runtime and OpenVINO agree
        from ml.infer.onnx import export_bundle
        from ml.infer.openvino_export import export_openvino

        export_bundle(out, data=two_sources["folder"], check_slices=4)
        made = export_openvino(
            out, [two_sources["folder"]], precisions=("f32", "mixed"), max_slices=8
        )
        assert "error" not in made["checks"]["mixed"]  # its two parts chained are the model
        reference = predictor.predict([image])[0].fold_probabilities
        for backend, precision in (("onnx", "auto"), ("openvino", "f32")):
            other = Predictor.from_bundle(out, backend=backend, precision=precision)
            assert other.predict([image])[0].fold_probabilities == pytest.approx(
                reference, abs=1e-4
            )
