"""Which epoch to keep: pooled out-of-fold ROC-AUC under several checkpoint rules, from one run.

    python benchmarks/epoch_rules.py bundles/cpu

Each fold's log keeps every epoch's validation scores (one view, the scores the pipeline chooses
on). This scores the pooled OOF predictions that each rule would have kept:

- best slice AUC: the epoch with the best validation slice ROC-AUC of that fold (what `ml train`
  keeps). The choice is made on the very patients it is then scored on, so it flatters.
- best patient AUC: the same, on the fold's patient-level ROC-AUC ("early stopping on patient
  AUC"); with about 12 validation patients a fold, a noisy choice, and it flatters in the same way.
- last epoch: no choice at all, so the only rule here whose OOF figure is not tuned on itself.
- epoch k: the same epoch in every fold; picking the best k afterwards is again a choice on OOF.

The gap between "best slice AUC" and "last epoch" is an estimate of how much choosing the epoch on
the validation fold inflates the reported OOF figures. Intervals resample patients.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ml import load_config, metrics


def fold_epochs(bundle: Path, fold: int) -> list[dict]:
    text = (bundle / "logs" / f"fold_{fold}.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not rows or "val_probabilities" not in rows[0]:
        raise SystemExit(
            f"{bundle}: fold {fold}'s log has no per-epoch validation scores; "
            "train the bundle again with this version"
        )
    return rows


def pick(epochs: list[dict], rule: str) -> int:
    """Index of the epoch a rule keeps; a criterion that is missing (one class) counts as -inf."""
    if rule == "last":
        return len(epochs) - 1
    if rule.startswith("epoch "):
        return min(int(rule.split()[1]), len(epochs)) - 1
    key = {"best slice AUC": "val_roc_auc", "best patient AUC": "val_patient_roc_auc"}[rule]
    values = [row.get(key) for row in epochs]
    return int(np.argmax([-np.inf if v is None else v for v in values]))


def rule_table(bundle: Path, resamples: int = 1000) -> list[dict]:
    """One row per rule: the epoch kept in each fold and the pooled OOF figures."""
    cfg = load_config(bundle / "config.yaml")
    with (bundle / "oof.csv").open(newline="") as handle:
        oof = list(csv.DictReader(handle))
    folds = sorted({int(r["fold"]) for r in oof})
    logs = {k: fold_epochs(bundle, k) for k in folds}
    rules = ["best slice AUC", "best patient AUC", "last"]
    rules += [f"epoch {k}" for k in range(1, cfg.epochs + 1)]
    table = []
    for rule in rules:
        labels, scores, groups, kept = [], [], [], []
        for k in folds:
            val = [r for r in oof if int(r["fold"]) == k]  # record order, as the fold scored them
            index = pick(logs[k], rule)
            kept.append(index + 1)
            labels += [int(r["label"]) for r in val]
            groups += [r["patient_id"] for r in val]
            scores += logs[k][index]["val_probabilities"]
        y, p = np.array(labels), np.array(scores)
        patients, patient_y, patient_p = metrics.patient_scores(groups, y, p, cfg.study_aggregation)
        table.append(
            {
                "rule": rule,
                "epochs": kept,
                "slice": metrics.roc_auc(y, p),
                "slice_ci": metrics.bootstrap_ci(y, p, groups, n_resamples=resamples),
                "patient": metrics.roc_auc(patient_y, patient_p),
                "patient_ci": metrics.bootstrap_ci(
                    patient_y, patient_p, patients, n_resamples=resamples
                ),
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(f"{args.bundle.name}: pooled OOF, one view per epoch; 95% intervals resample patients")
    print(f"{'rule':18s} {'epochs kept':14s} {'slice ROC-AUC':24s} patient ROC-AUC")
    for row in rule_table(args.bundle, args.resamples):
        (s_low, s_high), (p_low, p_high) = row["slice_ci"], row["patient_ci"]
        print(
            f"{row['rule']:18s} {','.join(map(str, row['epochs'])):14s} "
            f"{row['slice']:.3f} ({s_low:.3f}-{s_high:.3f})      "
            f"{row['patient']:.3f} ({p_low:.3f}-{p_high:.3f})"
        )


if __name__ == "__main__":
    main()
