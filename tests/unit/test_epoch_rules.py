"""benchmarks/epoch_rules.py: other checkpoint rules replayed from one run's fold logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.unit.benchmark_script import load_script

pytestmark = pytest.mark.slow


def _script():
    return load_script("epoch_rules")


def test_rules_keep_the_epochs_they_promise(tiny_bundle: Path) -> None:
    table = {row["rule"]: row for row in _script().rule_table(tiny_bundle, resamples=50)}
    kept = []
    for fold in (1, 2, 3):
        with safe_open(str(tiny_bundle / f"fold_{fold}.safetensors"), "pt") as handle:
            kept.append(int(handle.metadata()["epoch"]))
    assert table["best slice AUC"]["epochs"] == kept  # the rule `ml train` applies
    epochs = len((tiny_bundle / "logs/fold_1.jsonl").read_text().splitlines())
    assert table["last"]["epochs"] == [epochs] * 3
    assert table["last"]["slice"] == table[f"epoch {epochs}"]["slice"]
    for row in table.values():
        assert 0.0 <= row["slice_ci"][0] <= row["slice_ci"][1] <= 1.0


def test_a_log_without_epoch_scores_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    log = old / "logs/fold_1.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    older = [{k: v for k, v in r.items() if k != "val_probabilities"} for r in rows]
    log.write_text("\n".join(json.dumps(r) for r in older))  # as logs were before this version
    with pytest.raises(SystemExit, match="no per-epoch validation scores"):
        _script().rule_table(old)
