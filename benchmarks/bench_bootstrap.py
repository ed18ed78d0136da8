"""Bootstrap intervals of ROC-AUC: our rank-based ROC-AUC against scikit-learn's, one run.

    python benchmarks/bench_bootstrap.py

A report draws a patient-resampled interval (1,000 resamples) for every ROC-AUC it prints, per
source and level. "plain" passes scikit-learn's `roc_auc_score` to `bootstrap_ci`; "ours" uses
`ml.metrics.roc_auc`. Both give the same interval (checked). Two sizes: a test-suite run
(48 slices) and the two sources of issue 17 (4,659 slices, 156 patients).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import roc_auc_score

from ml.metrics import bootstrap_ci, roc_auc


def timed(metric, y, p, groups) -> tuple[float, tuple[float, float]]:
    began = time.perf_counter()
    interval = bootstrap_ci(y, p, groups, metric)
    return time.perf_counter() - began, interval


def main() -> None:
    rng = np.random.default_rng(0)
    for slices, patients in ((48, 12), (4659, 156)):
        groups = [f"p{i % patients}" for i in range(slices)]
        y = (rng.random(slices) < 0.3).astype(int)
        p = np.clip(y * 0.2 + rng.random(slices), 0, 1)
        plain, plain_ci = timed(lambda a, b: float(roc_auc_score(a, b)), y, p, groups)
        ours, ours_ci = timed(roc_auc, y, p, groups)
        assert np.allclose(plain_ci, ours_ci, atol=1e-12), (plain_ci, ours_ci)
        low, high = ours_ci
        print(
            f"{slices} slices, {patients} patients, 1000 resamples: plain {plain:.2f} s, "
            f"ours {ours:.2f} s, ratio {plain / ours:.1f}x, interval {low:.3f}-{high:.3f}"
        )


if __name__ == "__main__":
    main()
