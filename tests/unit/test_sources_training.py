"""Training and scoring on two sources with slice labels: what the bundle records, how it scores
patients, and every data command taking a manifest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ml.bundle import load_bundle
from ml.cli.main import main
from ml.data.dataset import SliceRecord
from ml.infer.predictor import Predictor
from ml.metrics import scores as metrics
from ml.train.loop import weighted
from ml.train.losses import BCELoss
from ml.train.pipeline import loss_weights

pytestmark = pytest.mark.slow


def _metrics(bundle: Path) -> dict:
    return json.loads((bundle / "metrics.json").read_text())


def test_each_source_is_reported_on_its_own(slice_label_bundle: Path) -> None:
    figures = _metrics(slice_label_bundle)
    folder, site = figures["by_source"]["folder"], figures["by_source"]["site"]
    assert folder["patient"]["n"] == 12 and site["patient"] is None
    assert "slice level only" in site["patient_note"]
    assert site["slice"]["positives"] > 0 and site["slice"]["n"] > site["slice"]["positives"]
    # Against the folders every slice of a stroke patient counts as positive.
    assert folder["against_folders"]["slice"]["positives"] > folder["slice"]["positives"]
    assert figures["patient"]["n"] == 12 and figures["patient"]["sources"] == ["folder"]
    cam = figures["cam_in_lesion"]["by_source"]
    assert list(cam) == ["site"] and cam["site"]["slices"] == used_lesions(figures)
    assert 0.0 <= cam["site"]["peak_in_lesion"] <= 1.0
    assert figures["cam_in_lesion"]["layer"] == "stride16"  # the default, which the bundle draws
    assert cam == figures["cam_in_lesion"]["by_layer"]["stride16"]
    coarse = figures["cam_in_lesion"]["by_layer"]["last"]["site"]  # the other layer, same slices
    assert coarse["slices"] == cam["site"]["slices"]
    card = (slice_label_bundle / "model_card.md").read_text()
    assert "Grad-CAM (stride16 layer) against the lesion masks of site" in card
    assert f"other CAM layers: last {100 * coarse['peak_in_lesion']:.1f}% (site)" in card
    level = site["position"]  # what the slice's level alone scores, out of fold
    assert 0.0 <= level["baseline_roc_auc"] <= 1.0 and level["levels"] == 10
    assert "- site: the slice's level alone" in card
    used = {u["source"]: u for u in figures["labels"]}
    assert used["folder"]["labels_file"]["file"] == "slice_labels.csv"
    assert used["site"]["masks"] == used["site"]["slices"]


def used_lesions(figures: dict) -> int:
    """Lesion slices of the masked source, all scored out of fold (fewer than the cap)."""
    return next(u["lesion_slices"] for u in figures["labels"] if u["source"] == "site")


def test_the_patient_rule_is_chosen_on_oof_and_used_everywhere(
    slice_label_bundle: Path, two_sources: dict[str, Path]
) -> None:
    choice = _metrics(slice_label_bundle)["aggregation_choice"]
    scored = {k: v for k, v in choice["candidates"].items() if v is not None}
    assert set(choice["candidates"]) == set(metrics.AGGREGATIONS)
    assert choice["chosen"] == max(scored, key=scored.get)
    saved = yaml.safe_load((slice_label_bundle / "config.yaml").read_text())
    assert saved["study_aggregation"] == "auto"  # as trained; the choice is recorded beside it
    bundle = load_bundle(slice_label_bundle)
    assert bundle.train_config().study_aggregation == choice["chosen"]
    assert bundle.card()["study_aggregation"] == choice["chosen"]
    predictor = Predictor(bundle, backend="torch")
    study = predictor.predict_study(sorted((two_sources["folder"] / "Stroke").glob("*.png"))[:3])
    assert study.aggregation == choice["chosen"]
    card = (slice_label_bundle / "model_card.md").read_text()
    assert (
        "## Labels (trained and scored on)" in card and f"Patient score: {choice['chosen']}" in card
    )
    assert "| site |" in card and "slice level only" in card


def test_oof_rows_keep_every_label(slice_label_bundle: Path) -> None:
    with (slice_label_bundle / "oof.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"source", "study_label", "folder_label", "slice_known"} <= set(rows[0])
    site = [r for r in rows if r["source"] == "site"]
    assert site and all(r["patient_id"].startswith("site/") for r in site)
    assert all(r["study_label"] == "1" for r in site)
    assert {r["label"] for r in site} == {"0", "1"}


@pytest.mark.parametrize("manifest", [True, False])
def test_evaluate_scores_a_manifest_or_a_labelled_folder(
    slice_label_bundle: Path, two_sources: dict[str, Path], tmp_path: Path, capsys, manifest: bool
) -> None:
    """`ml evaluate --data labels.csv` used to crash after scoring (NotADirectoryError)."""
    if manifest:
        data = ["--data", f"site={two_sources['site']}"]
    else:
        data = ["--data", f"folder={two_sources['folder']}", "--labels", str(two_sources["labels"])]
    out = tmp_path / "report"
    code = main(["evaluate", "--bundle", str(slice_label_bundle), *data, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "were used in training" in printed  # the files match oof.csv by content
    result = json.loads((out / "metrics.json").read_text())
    assert result["seen_in_training"] == result["slice"]["n"] > 0
    [source] = result["by_source"]
    assert source == ("site" if manifest else "folder")


def test_audit_and_export_take_a_manifest(
    slice_label_bundle: Path, two_sources: dict[str, Path], tmp_path: Path, capsys
) -> None:
    site = str(two_sources["site"])
    assert main(["audit", "--data", site, "--preset", "test", "--no-cache"]) == 0
    assert '"lesion_slices"' in capsys.readouterr().out
    copy = tmp_path / "bundle"
    shutil.copytree(slice_label_bundle, copy)
    assert main(["export", str(copy), "--data", site, "--check-slices", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 slices from labels.csv" in out
    site_slices = len((two_sources["site"]).read_text().strip().splitlines()) - 1
    # the OpenVINO variants are checked on the manifest's slices, found by content in oof.csv
    assert f"checked on {site_slices} of the bundle's" in out


def test_a_bad_labels_file_stops_before_any_training(
    two_sources: dict[str, Path], tmp_path: Path, capsys
) -> None:
    with two_sources["labels"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[2]["bleed"] = "yes"
    bad = two_sources["folder"].parent / "bad_labels.csv"
    with bad.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "never"
    args = ["train", "--data", str(two_sources["folder"]), "--labels", str(bad)]
    assert main([*args, "--preset", "test", "--out", str(out), "--no-cache"]) == 2
    said = capsys.readouterr().err
    assert "line 4" in said and "'yes'" in said and not out.exists()


def _record(known: bool, study: int, label: int) -> SliceRecord:
    return SliceRecord(
        Path("x.png"), "x.png", label, "c", "p", study_label=study, slice_known=known
    )


def test_slices_with_only_a_positive_study_label_weigh_less() -> None:
    records = [_record(True, 1, 1), _record(False, 1, 1), _record(False, 0, 0)]
    assert loss_weights(records, 0.25).tolist() == [1.0, 0.25, 1.0]
    folder_only = [_record(False, 1, 1), _record(False, 0, 0)]
    assert loss_weights(folder_only, 0.25) is None  # nothing to weigh them against


def test_the_weighted_loss_counts_each_sample_by_its_weight() -> None:
    loss_fn = BCELoss()
    logits, targets = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.0])
    each = loss_fn(logits, targets, reduction="none")
    weights = torch.tensor([1.0, 0.25, 1.0])
    expected = float((each * weights).sum() / weights.sum())
    assert float(weighted(loss_fn, logits, targets, weights)) == pytest.approx(expected)
    assert float(weighted(loss_fn, logits, targets, torch.ones(3))) == pytest.approx(
        float(each.mean())
    )
    assert np.isfinite(float(weighted(loss_fn, logits, targets, torch.zeros(3))))
