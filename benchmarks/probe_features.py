"""How far frozen ImageNet features go on a data set: a linear probe, patient-grouped.

    python benchmarks/probe_features.py --data DIR [--backbone tf_efficientnet_lite0 --size 224]

Decodes the slices as the `cpu` preset does (crop to the head, cache shared with `ml train`), runs
the pretrained backbone once per slice (identity and horizontal flip, averaged), pools each stage's
output and the final features, and fits a class-balanced logistic regression per fold of the
recipe's own patient-grouped split. Prints slice- and patient-level (mean over a patient's slices)
ROC-AUC of the out-of-fold scores for a few feature sets and regularisation strengths, with the
fold range. It fine-tunes nothing, so it takes minutes, not an hour: a floor for what training has
to beat. The best line is chosen on the same OOF scores, so it flatters. See RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ml import make_config
from ml.data import to_tensor
from ml.models import build_from_config
from ml.train import prepare_training

STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)


def features(images: np.ndarray, cfg) -> tuple[np.ndarray, list[int]]:
    """Per slice: every block's output and the final features, average-pooled, flip-averaged."""
    built = build_from_config(cfg)
    net = built.model.backbone.eval()
    pooled: dict[int, torch.Tensor] = {}
    for index, block in enumerate(net.blocks):
        block.register_forward_hook(
            lambda _m, _a, out, index=index: pooled.__setitem__(index, out.mean((2, 3)))
        )
    rows = []
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            batch = torch.stack(
                [
                    to_tensor(np.asarray(image), cfg.in_chans, built.mean, built.std)
                    for image in images[start : start + 32]
                ]
            )
            views = []
            for view in (batch, batch.flip(3)):
                final = net(view)
                views.append(torch.cat([pooled[i] for i in sorted(pooled)] + [final], 1))
            rows.append(((views[0] + views[1]) / 2).numpy())
    widths = [pooled[i].shape[1] for i in sorted(pooled)] + [final.shape[1]]
    return np.concatenate(rows), widths


def probe(x: np.ndarray, labels, parts, patients, strength: float) -> tuple[float, float, list]:
    scores, per_fold = np.zeros(len(labels)), []
    for fold in np.unique(parts[parts > 0]):
        train, val = (parts != fold) & (parts > 0), parts == fold
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(C=strength, max_iter=3000, class_weight="balanced")
        model.fit(scaler.transform(x[train]), labels[train])
        scores[val] = model.predict_proba(scaler.transform(x[val]))[:, 1]
        per_fold.append(roc_auc_score(labels[val], scores[val]))
    scored = parts > 0
    ids = np.unique(patients[scored])
    patient_labels = [labels[patients == i][0] for i in ids]
    patient_scores = [scores[(patients == i) & scored].mean() for i in ids]
    slice_auc = roc_auc_score(labels[scored], scores[scored])
    return slice_auc, roc_auc_score(patient_labels, patient_scores), per_fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    cfg = make_config("cpu", backbone=args.backbone, image_size=args.size)
    started = time.perf_counter()
    prepared = prepare_training(args.data, cfg, progress=False)
    x, widths = features(prepared.images, cfg)
    print(f"{len(x)} slices, {x.shape[1]} features, {time.perf_counter() - started:.0f} s")
    labels, parts = prepared.labels, prepared.parts
    patients = np.array([r.patient_id for r in prepared.records])
    edges = np.cumsum([0, *widths])
    sets = {"final": [len(widths) - 1], "all stages": list(range(len(widths)))}
    for name, chosen in sets.items():
        chosen_x = np.concatenate([x[:, edges[i] : edges[i + 1]] for i in chosen], 1)
        for strength in STRENGTHS:
            slice_auc, patient_auc, per_fold = probe(chosen_x, labels, parts, patients, strength)
            print(
                f"{args.backbone} {args.size}px {name:10s} C={strength:g}: slice {slice_auc:.3f} "
                f"patient {patient_auc:.3f} folds {min(per_fold):.3f}-{max(per_fold):.3f}"
            )


if __name__ == "__main__":
    main()
