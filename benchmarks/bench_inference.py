"""Ensemble inference speed: the plain loop against our torch and ONNX backends, in one run.

    python benchmarks/bench_inference.py                  # 5 x EfficientNet-B3 at 300 px, 3 views
    python benchmarks/bench_inference.py --bundle bundles/cpu --slices 8

(a) plain: K x V separate batch-1 torch forward passes per slice, contiguous tensors, no_grad,
    the default allocator (no tcmalloc) - what a straightforward implementation does;
(b) ours, torch: `Predictor` with backend torch (views batched, channels_last, inference_mode),
    under tcmalloc when it is installed;
(c) ours, ONNX: `Predictor` with backend onnx on the bundle's export (made here if missing).
Each runs in its own process so that the allocator differs only where it should. Achieved
GFLOP/s (forward FLOPs counted by torch's FlopCounterMode) is set against a float32
matrix-multiply measured here, in the same process setting as the faster backend.

Without --bundle, a bundle of randomly initialised fold models is written to a temporary
folder: speed does not depend on the weights, and no pretrained download is needed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPEATS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a trained bundle (default: random B3 x 5)")
    parser.add_argument("--backbone", default="tf_efficientnet_b3")
    parser.add_argument("--image-size", type=int, default=300)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=4, help="phantom slices scored per repeat")
    parser.add_argument(
        "--worker", choices=("plain", "torch", "onnx", "matmul"), help=argparse.SUPPRESS
    )
    parser.add_argument("--slice-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or make_random_bundle(
            Path(tmp) / "bench", args.backbone, args.image_size, args.folds
        )
        slice_dir = write_phantom_slices(Path(tmp) / "slices", args.slices)
        ensure_export(bundle)
        results = {
            name: run_worker(name, bundle, slice_dir, tcmalloc=name != "plain")
            for name in ("plain", "torch", "onnx")
        }
        flops = forward_flops(bundle)
        fastest = min(("torch", "onnx"), key=lambda n: results[n]["ms_per_slice"])
        matmul = run_worker("matmul", bundle, slice_dir, tcmalloc=True)
    report(results, flops, fastest, matmul["gflops"], bundle)


def report(results: dict, flops: dict, fastest: str, matmul_gflops: float, bundle: Path) -> None:
    per_slice = flops["per_image"] * flops["folds"] * flops["views"]
    plain_ms = results["plain"]["ms_per_slice"]
    print(
        f"bundle: {flops['backbone']} at {flops['image_size']} px, {flops['folds']} folds x "
        f"{flops['views']} views = {per_slice / 1e9:.1f} GFLOP per slice ({bundle.name})"
    )
    print(f"float32 matrix multiply here: {matmul_gflops:.1f} GFLOP/s")
    print(f"{'approach':<34}{'ms/slice':>10}{'speed-up':>10}{'GFLOP/s':>10}  allocator")
    labels = {
        "plain": "(a) plain loop, batch 1",
        "torch": "(b) ours, torch backend",
        "onnx": "(c) ours, ONNX Runtime",
    }
    for name, label in labels.items():
        ms = results[name]["ms_per_slice"]
        gflops = per_slice / (ms / 1000) / 1e9
        print(
            f"{label:<34}{ms:>10.0f}{plain_ms / ms:>9.2f}x{gflops:>10.1f}  "
            f"{results[name]['allocator']}"
        )
    fastest_gflops = per_slice / (results[fastest]["ms_per_slice"] / 1000) / 1e9
    print(
        f"speedup_torch={plain_ms / results['torch']['ms_per_slice']:.2f} "
        f"speedup_onnx={plain_ms / results['onnx']['ms_per_slice']:.2f} "
        f"peak_fraction={fastest_gflops / matmul_gflops:.2f}"
    )


# ---- workers: each runs in its own process ------------------------------------------------


def worker_plain(args: argparse.Namespace) -> dict:
    from ml import Predictor

    predictor = Predictor.from_bundle(args.bundle, backend="torch")
    models = [m.to(memory_format=torch.contiguous_format) for m in predictor.torch_models()]
    views = [VIEW_FUNCTIONS[v] for v in predictor.views]
    tensors = [predictor.prepare(p).tensor for p in sorted(args.slice_dir.iterdir())]

    def run() -> None:
        with torch.no_grad():
            for x in tensors:
                probs = [torch.sigmoid(m(v(x[None]))) for m in models for v in views]
                float(torch.stack(probs).mean())

    return {"ms_per_slice": timed(run) / len(tensors) * 1000, **_allocator()}


def worker_predictor(backend: str):
    def worker(args: argparse.Namespace) -> dict:
        from ml import Predictor

        predictor = Predictor.from_bundle(args.bundle, backend=backend)
        if predictor.backend != backend:
            raise SystemExit(f"wanted backend {backend}, got {predictor.backend}")
        paths = sorted(args.slice_dir.iterdir())
        prepared = [predictor.prepare(p) for p in paths]
        seconds = timed(lambda: predictor.predict_prepared(prepared))
        return {"ms_per_slice": seconds / len(prepared) * 1000, **_allocator()}

    return worker


def worker_matmul(args: argparse.Namespace) -> dict:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = timed(lambda: a @ b)
    return {"gflops": 2 * 2048**3 / seconds / 1e9, **_allocator()}


def timed(fn) -> float:
    """Best of REPEATS after one warm-up call: the least disturbed measurement."""
    fn()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _allocator() -> dict:
    from ml import allocator

    return {"allocator": allocator()}


VIEW_FUNCTIONS = {
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[-1]),
    "vflip": lambda x: torch.flip(x, dims=[-2]),
}
WORKERS = {
    "plain": worker_plain,
    "torch": worker_predictor("torch"),
    "onnx": worker_predictor("onnx"),
    "matmul": worker_matmul,
}


# ---- set-up -----------------------------------------------------------------------------


def run_worker(name: str, bundle: Path, slice_dir: Path, *, tcmalloc: bool) -> dict:
    from ml import OPT_OUT, find_tcmalloc

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    library = find_tcmalloc()
    if tcmalloc and library:
        env["LD_PRELOAD"] = library
    else:
        env[OPT_OUT] = "1"
    command = [sys.executable, __file__, "--worker", name, "--bundle", str(bundle)]
    command += ["--slice-dir", str(slice_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def forward_flops(bundle: Path) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from ml import load_bundle
    from ml.models import build_model

    loaded = load_bundle(bundle)
    cfg = loaded.train_config()
    model = build_model(cfg.backbone, in_chans=cfg.in_chans, head_hidden=cfg.head_hidden).model
    x = torch.zeros(1, cfg.in_chans, cfg.image_size, cfg.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return {
        "per_image": counter.get_total_flops(),
        "folds": loaded.folds,
        "views": len(cfg.tta_views),
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
    }


def ensure_export(bundle: Path) -> None:
    from ml import export_bundle, export_matches, load_bundle

    if not export_matches(load_bundle(bundle)):
        export_bundle(bundle, check_slices=2)


def write_phantom_slices(folder: Path, count: int) -> Path:
    from PIL import Image

    from ml.data import BRAIN_WINDOW, phantom_patient, window_to_uint8

    folder.mkdir(parents=True)
    phantoms = phantom_patient(np.random.default_rng(0), n_slices=count, size=512, stroke=True)
    for k, phantom in enumerate(phantoms, start=1):
        buffer = io.BytesIO()
        Image.fromarray(window_to_uint8(phantom.hu, *BRAIN_WINDOW)).save(buffer, format="PNG")
        (folder / f"slice_{k:03d}.png").write_bytes(buffer.getvalue())
    return folder


def make_random_bundle(
    path: Path, backbone: str, size: int, folds: int, **settings: object
) -> Path:
    """A complete bundle whose fold models are randomly initialised: for timing only.
    `settings` are further TrainConfig fields (crop_head=True, say)."""
    from safetensors.torch import save_file

    from ml import OperatingPoint, make_config, save_config, write_manifest, write_thresholds
    from ml.models import build_model

    path.mkdir(parents=True)
    cfg = make_config(
        "reference",
        backbone=backbone,
        image_size=size,
        folds=folds,
        pretrained="none",
        **settings,
    )
    save_config(cfg, path / "config.yaml")
    built = None
    for fold in range(1, folds + 1):
        torch.manual_seed(fold)
        built = build_model(backbone, head_hidden=cfg.head_hidden, dropout=cfg.dropout)
        state = {k: v.contiguous() for k, v in built.model.state_dict().items()}
        save_file(state, str(path / f"fold_{fold}.safetensors"))
    point = [OperatingPoint(name="youden", policy="youden", threshold=0.5)]
    write_thresholds(path / "thresholds.json", point, "youden")
    write_thresholds(path / "patient_thresholds.json", point, "youden", level="patient")
    timing_only = {"note": "random weights, for timing only"}
    (path / "uncertainty.json").write_text(
        json.dumps({"half_width": 0.05, "fold_std_limit": 0.1, **timing_only})
    )
    (path / "metrics.json").write_text(json.dumps(timing_only))
    (path / "audit.json").write_text(json.dumps({"ok": True, **timing_only}))
    write_manifest(
        path,
        normalisation={"mean": list(built.mean), "std": list(built.std)},
        notes=["Benchmark bundle: randomly initialised weights, for timing only."],
    )
    return path


if __name__ == "__main__":
    main()
