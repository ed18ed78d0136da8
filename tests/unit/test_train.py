"""A full tiny `ml train` on phantoms: the bundle, its honesty checks, resume and refusals."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ml.bundle import BundleError, load_bundle
from ml.cli.main import main
from ml.config import config_from_dict, load_config, make_config
from ml.data.cache import to_square
from ml.data.readers import read_slice
from ml.data.transforms import to_tensor
from ml.data.tta import build_views
from ml.evaluate.scoring import evaluate_bundle
from ml.metrics import scores as metrics
from ml.models.network import build_model
from ml.train.pipeline import BadDataError, prepare, run_training

pytestmark = pytest.mark.slow


def load_config_text(text: str):
    return config_from_dict(json.loads(text))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_bundle_holds_every_promised_file(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    expected = {"config.yaml", "oof.csv", "metrics.json", "split.json", "audit.json", "report.md"}
    expected |= {f"fold_{k}.safetensors" for k in (1, 2, 3)}
    expected |= {f"logs/fold_{k}.jsonl" for k in (1, 2, 3)}
    assert expected <= set(bundle.manifest["files"])
    assert bundle.manifest["packages"]["torch"] == torch.__version__.split("+")[0]
    assert bundle.manifest["data"]["patients"] == {"Normal": 6, "Stroke": 6}
    assert bundle.audit["ok"] and bundle.audit["patients_in_several_parts"] == 0
    assert len(bundle.id) == 16


def test_oof_has_every_slice_once_in_its_patients_fold(
    tiny_bundle: Path, phantom_data: Path
) -> None:
    rows = _rows(tiny_bundle / "oof.csv")
    on_disk = sorted(p.relative_to(phantom_data).as_posix() for p in phantom_data.rglob("*.png"))
    assert sorted(r["path"] for r in rows) == on_disk
    split = json.loads((tiny_bundle / "split.json").read_text())
    for row in rows:
        assert row["patient_id"] in split[f"fold_{row['fold']}"]
        assert row["label"] == ("1" if row["path"].startswith("Stroke/") else "0")
    folds_of_patient = {}
    for row in rows:
        folds_of_patient.setdefault(row["patient_id"], set()).add(row["fold"])
    assert all(len(f) == 1 for f in folds_of_patient.values())


def test_metrics_agree_with_the_oof_file(tiny_bundle: Path) -> None:
    rows = _rows(tiny_bundle / "oof.csv")
    y = [int(r["label"]) for r in rows]
    p = [float(r["probability"]) for r in rows]
    saved = json.loads((tiny_bundle / "metrics.json").read_text())
    assert saved["slice"]["roc_auc"] == pytest.approx(metrics.roc_auc(y, p), abs=1e-5)
    _, py, pp = metrics.patient_scores([r["patient_id"] for r in rows], y, p, "mean")
    assert saved["patient"]["roc_auc"] == pytest.approx(metrics.roc_auc(py, pp), abs=1e-5)
    assert saved["patient"]["n"] == 12
    low, high = saved["slice"]["roc_auc_ci95"]
    assert low <= saved["slice"]["roc_auc"] <= high
    assert saved["operating_point"]["chosen_on"] == "out-of-fold predictions"
    assert "optimistic" in saved["checkpoint_selection"]


def test_kept_checkpoint_is_the_best_validation_epoch(tiny_bundle: Path) -> None:
    cfg = load_config(tiny_bundle / "config.yaml")
    for fold in (1, 2, 3):
        text = (tiny_bundle / f"logs/fold_{fold}.jsonl").read_text()
        log = [json.loads(line) for line in text.splitlines()]
        assert [row["epoch"] for row in log] == list(range(1, cfg.epochs + 1))
        assert log[0]["frozen_backbone"] and not log[-1]["frozen_backbone"]
        with safe_open(str(tiny_bundle / f"fold_{fold}.safetensors"), "pt") as handle:
            meta = handle.metadata()
        assert load_config_text(meta["config"]) == cfg  # the checkpoint carries its config
        if meta["chosen_on"] == "val_roc_auc":
            aucs = [row["val_roc_auc"] for row in log]
            assert int(meta["epoch"]) == 1 + int(np.argmax(aucs))
        mined = [row["hard_examples_added"] for row in log]
        assert mined[cfg.hnm_epoch - 1] >= 0 and sum(mined[cfg.hnm_epoch :]) == 0


def test_checkpoint_check_measures_what_choosing_the_epoch_added(tiny_bundle: Path) -> None:
    """Recomputed here from the fold logs: the kept epochs and the last epochs, pooled."""
    check = json.loads((tiny_bundle / "metrics.json").read_text())["checkpoint_check"]
    oof = _rows(tiny_bundle / "oof.csv")
    logs = {
        k: [json.loads(x) for x in (tiny_bundle / f"logs/fold_{k}.jsonl").read_text().splitlines()]
        for k in (1, 2, 3)
    }
    assert check["kept_epochs"]["epochs"] == [
        int(json.loads((tiny_bundle / f"logs/fold_{k}.result.json").read_text())["best_epoch"])
        for k in (1, 2, 3)
    ]
    for name, epoch_of in (
        ("kept_epochs", lambda k: check["kept_epochs"]["epochs"][k - 1] - 1),
        ("last_epochs", lambda k: -1),
    ):
        y, p = [], []
        for k in (1, 2, 3):  # oof.csv lists each fold's slices in the order the fold scored them
            y += [int(r["label"]) for r in oof if r["fold"] == str(k)]
            p += logs[k][epoch_of(k)]["val_probabilities"]
        assert check[name]["slice_roc_auc"] == pytest.approx(metrics.roc_auc(y, p), abs=1e-6)
    gain = check["gain_from_choosing"]["slice_roc_auc"]
    expected = check["kept_epochs"]["slice_roc_auc"] - check["last_epochs"]["slice_roc_auc"]
    assert gain == pytest.approx(expected)
    assert "choosing changed them by" in (tiny_bundle / "model_card.md").read_text()


def test_checkpoint_last_keeps_the_final_epoch() -> None:
    import io

    from ml.train.loop import FoldData, train_fold

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (24, 48, 48, 1), dtype=np.uint8)
    labels = np.array([0, 1] * 12)
    groups = [f"p{i // 4}" for i in range(24)]
    data = FoldData(1, images, labels, list(range(16)), list(range(16, 24)), groups=groups)
    cfg = make_config(
        "test", epochs=3, freeze_epochs=0, checkpoint="last", hnm_epoch=0, tta_views=("identity",)
    )
    log = io.StringIO()
    result, _ = train_fold(data, cfg, torch.device("cpu"), log, progress=False)
    assert (result.best_epoch, result.chosen_on) == (3, "last_epoch")
    assert len(result.epoch_val_probabilities) == 3
    # The stored predictions come from the weights kept: those of epoch 3, one view each.
    assert np.allclose(result.val_probabilities, result.epoch_val_probabilities[-1], atol=1e-6)
    rows = [json.loads(line) for line in log.getvalue().splitlines()]
    assert result.epoch_val_probabilities[-1] == rows[-1]["val_probabilities"]
    assert "val_patient_roc_auc" in rows[-1]


def test_epoch_log_keeps_each_epochs_validation_scores(tiny_bundle: Path) -> None:
    """So other checkpoint rules can be compared afterwards on the same run."""
    cfg = load_config(tiny_bundle / "config.yaml")
    oof = _rows(tiny_bundle / "oof.csv")
    for fold in (1, 2, 3):
        val = [r for r in oof if r["fold"] == str(fold)]  # record order, as the fold scored them
        labels = np.array([int(r["label"]) for r in val])
        groups = [r["patient_id"] for r in val]
        for line in (tiny_bundle / f"logs/fold_{fold}.jsonl").read_text().splitlines():
            row = json.loads(line)
            scores = np.array(row["val_probabilities"])
            assert len(scores) == len(val)
            assert row["val_roc_auc"] == pytest.approx(metrics.roc_auc(labels, scores), abs=1e-4)
            _, patient_labels, patient_scores = metrics.patient_scores(
                groups, labels, scores, cfg.study_aggregation
            )
            expected = metrics.roc_auc(patient_labels, patient_scores)
            assert row["val_patient_roc_auc"] == pytest.approx(expected, abs=1e-4)


def test_fold_weights_reproduce_the_stored_oof_probability(
    tiny_bundle: Path, phantom_data: Path
) -> None:
    """Raw file -> reader -> resize -> normalise -> fold model with TTA equals oof.csv."""
    bundle = load_bundle(tiny_bundle)
    cfg = load_config(tiny_bundle / "config.yaml")
    norm = bundle.manifest["normalisation"]
    views = build_views(cfg.tta_views)
    for fold in (1, 3):
        row = next(r for r in _rows(tiny_bundle / "oof.csv") if r["fold"] == str(fold))
        model = build_model(cfg.backbone, head_hidden=cfg.head_hidden, dropout=cfg.dropout).model
        model.load_state_dict(load_file(str(bundle.fold_weights(fold))))
        model.eval()
        pixels = read_slice(phantom_data / row["path"], windows=cfg.windows).pixels
        x = to_tensor(to_square(pixels, cfg.image_size), cfg.in_chans, norm["mean"], norm["std"])
        with torch.inference_mode():
            p = torch.stack([torch.sigmoid(model(v(x[None]))) for v in views]).mean().item()
        assert p == pytest.approx(float(row["probability"]), abs=1e-4)


def test_a_changed_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    load_bundle(copy)
    with (copy / "oof.csv").open("a") as handle:
        handle.write("extra,row\n")
    with pytest.raises(BundleError, match=r"oof\.csv"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="--resume"):
        load_bundle(copy)


def test_resume_retrains_only_missing_folds_and_is_deterministic(
    tiny_bundle: Path, phantom_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = tmp_path / "resumed"
    shutil.copytree(tiny_bundle, copy)
    (copy / "fold_2.safetensors").unlink()
    (copy / "logs/fold_2.result.json").unlink()
    (copy / "manifest.json").unlink()
    cfg = load_config(copy / "config.yaml")
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(phantom_data, copy, cfg, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        other = make_config("test", seed=cfg.seed + 1)
        run_training(phantom_data, copy, other, resume=True, progress=False)
    run_training(phantom_data, copy, cfg, resume=True, cache_dir=tmp_path / "c", progress=False)
    out = capsys.readouterr().out
    assert "fold 1: already trained" in out and "fold 3: already trained" in out
    assert "fold 2 epoch 1/" in out
    # Same seed, same data, CPU: the retrained fold's weights and predictions are bit-identical
    # (the bundle id differs: its logs record wall time).
    again, before = (
        load_file(str(copy / "fold_2.safetensors")),
        load_file(str(tiny_bundle / "fold_2.safetensors")),
    )
    assert all(torch.equal(again[k], before[k]) for k in before)
    assert (copy / "oof.csv").read_text() == (tiny_bundle / "oof.csv").read_text()
    load_bundle(copy)


def test_resume_keeps_folds_saved_before_a_setting_existed(
    tiny_bundle: Path, phantom_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = tmp_path / "older"
    shutil.copytree(tiny_bundle, copy)
    (copy / "manifest.json").unlink()
    cfg = load_config(copy / "config.yaml")
    # Fold 1 as an older version saved it: its config lacks a setting added since (at its default).
    older = {k: v for k, v in cfg.to_dict().items() if k != "mask_layer"}
    digest = hashlib.sha256(json.dumps(older, sort_keys=True).encode()).hexdigest()[:16]
    result = json.loads((copy / "logs/fold_1.result.json").read_text())
    (copy / "logs/fold_1.result.json").write_text(json.dumps({**result, "config": digest}))
    weights = copy / "fold_1.safetensors"
    with safe_open(str(weights), "pt") as handle:
        metadata = {**handle.metadata(), "config": json.dumps(older), "config_digest": digest}
    save_file(load_file(str(weights)), str(weights), metadata=metadata)
    # Fold 2 trained on other data: trained again, and the run says why.
    result = json.loads((copy / "logs/fold_2.result.json").read_text())
    (copy / "logs/fold_2.result.json").write_text(json.dumps({**result, "data": "other"}))
    run_training(phantom_data, copy, cfg, resume=True, cache_dir=tmp_path / "c", progress=False)
    out = capsys.readouterr().out
    assert "fold 1: already trained" in out and "fold 3: already trained" in out
    assert "fold 2: saved, but with another data; trained again" in out
    assert "fold 2 epoch 1/" in out and "fold 1 epoch" not in out
    load_bundle(copy)


def test_patient_overlap_refuses_to_train(phantom_data: Path, tmp_path: Path) -> None:
    files = sorted(p.relative_to(phantom_data).as_posix() for p in phantom_data.rglob("*.png"))
    split = tmp_path / "leaky.csv"
    # A slice-level split, as notebooks often make: slices of one patient land in several folds.
    split.write_text("path,fold\n" + "".join(f"{f},{i % 3 + 1}\n" for i, f in enumerate(files)))
    out = tmp_path / "leaky-bundle"
    code = main(
        ["train", "--data", str(phantom_data), "--preset", "test", "--out", str(out),
         "--split", str(split), "--quiet", "--cache-dir", str(tmp_path / "c")]
    )  # fmt: skip
    assert code == 2
    assert not list(out.glob("fold_*.safetensors"))
    audit = json.loads((out / "audit.json").read_text())
    assert audit["patients_in_several_parts"] == 12


def _with_bad_files(phantom_data: Path, root: Path) -> Path:
    shutil.copytree(phantom_data, root)
    (root / "Normal/99 (1).png").write_text("I am text, not a PNG")
    good = (root / "Stroke/7 (1).png").read_bytes()
    (root / "Stroke/98 (1).png").write_bytes(good[: len(good) // 2])
    (root / "Normal/97 (1).png").write_bytes(b"")
    return root


def test_bad_files_are_reported_or_stop_a_strict_run(phantom_data: Path, tmp_path: Path) -> None:
    root = _with_bad_files(phantom_data, tmp_path / "data")
    cfg = make_config("test")
    prepared = prepare(root, cfg, cache_dir=None, progress=False)
    bad = {prepared.dataset.records[i].rel_path: why for i, why in prepared.decoded.bad}
    assert set(bad) == {"Normal/99 (1).png", "Stroke/98 (1).png", "Normal/97 (1).png"}
    assert "not a PNG, JPEG or DICOM" in bad["Normal/99 (1).png"]
    assert len(prepared.records) == 48
    with pytest.raises(BadDataError, match="3 file"):
        prepare(root, cfg, strict=True, cache_dir=None, progress=False)


def test_holdout_run_with_bad_files_completes(phantom_data: Path, tmp_path: Path) -> None:
    root = _with_bad_files(phantom_data, tmp_path / "data")
    out = tmp_path / "held"
    cfg = make_config("test", holdout_frac=0.2, folds=2, epochs=1, hnm_epoch=0)
    run_training(root, out, cfg, cache_dir=None, progress=False)
    report = (out / "report.md").read_text()
    assert "Unreadable files skipped: 3" in report and "`Normal/99 (1).png`" in report
    held = _rows(out / "holdout.csv")
    oof_patients = {r["patient_id"] for r in _rows(out / "oof.csv")}
    held_patients = {r["patient_id"] for r in held}
    assert len(held_patients) == 2 and not held_patients & oof_patients
    assert {r["fold"] for r in held} == {"holdout"}
    bundle = load_bundle(out)
    assert bundle.metrics["holdout"]["slice"]["n"] == len(held)
    assert bundle.manifest["data"]["unreadable_files"] == 3
    assert (out / "report_holdout" / "metrics.json").is_file()
    # The stored holdout predictions and a fresh scoring of the holdout files agree.
    stored = evaluate_bundle(out, data=None, holdout=True, out=tmp_path / "stored")
    rescored = evaluate_bundle(out, data=root, holdout=True, out=tmp_path / "rescored")
    assert stored["slice"]["roc_auc"] == pytest.approx(rescored["slice"]["roc_auc"])
    stored_p = [float(r["probability"]) for r in _rows(tmp_path / "stored" / "predictions.csv")]
    fresh_p = [float(r["probability"]) for r in _rows(tmp_path / "rescored" / "predictions.csv")]
    assert fresh_p == pytest.approx(stored_p, abs=1e-5)
    assert rescored["seen_in_training"] == 0


def test_decoded_slices_are_cached(phantom_data: Path, tmp_path: Path) -> None:
    cfg = make_config("test")
    first = prepare(phantom_data, cfg, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    second = prepare(phantom_data, cfg, cache_dir=tmp_path, progress=False)
    assert isinstance(second.decoded.images, np.memmap)
    np.testing.assert_array_equal(first.decoded.images, second.decoded.images)
    prepare(phantom_data, make_config("test", image_size=32), cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # another size is another cache entry


def test_each_epoch_draws_a_new_order_and_augmentation_repeatably() -> None:
    from ml.train.loop import FoldData, _Fold, balanced_rows

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 48, 48, 1), dtype=np.uint8)
    labels = np.array([0] * 30 + [1] * 10)
    data = FoldData(fold=1, images=images, labels=labels, train_rows=list(range(40)), val_rows=[])
    fold = _Fold(data, make_config("test"), torch.device("cpu"))
    rows, weights = balanced_rows(data.train_rows, labels, "sampler", np.random.default_rng(0))

    def first_batch(epoch: int) -> torch.Tensor:
        return next(iter(fold.loader(rows, augment=True, weights=weights, epoch=epoch)))[0]

    assert not torch.equal(first_batch(0), first_batch(1))
    assert torch.equal(first_batch(2), first_batch(2))


def test_a_split_file_must_number_folds_from_one(phantom_data: Path, tmp_path: Path) -> None:
    files = sorted(p.relative_to(phantom_data).as_posix() for p in phantom_data.rglob("*.png"))
    split = tmp_path / "gaps.csv"
    split.write_text(
        "path,fold\n" + "".join(f"{f},{1 if f.split(' ')[0].endswith('1') else 3}\n" for f in files)
    )
    with pytest.raises(ValueError, match=r"1\.\.K"):
        prepare(phantom_data, make_config("test"), split_file=split, cache_dir=None, progress=False)


def test_training_reads_the_cached_memory_map_without_warnings(
    phantom_data: Path, tmp_path: Path
) -> None:
    cfg = make_config("test", folds=2, epochs=1, hnm_epoch=0)
    prepare(phantom_data, cfg, cache_dir=tmp_path / "cache", progress=False)  # fills the cache
    run_training(phantom_data, tmp_path / "b", cfg, cache_dir=tmp_path / "cache", progress=False)
    assert load_bundle(tmp_path / "b").folds == 2
