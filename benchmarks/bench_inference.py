"""Ensemble inference speed: the plain loop against our torch, ONNX and OpenVINO backends.

    python benchmarks/bench_inference.py                  # 5 x EfficientNet-B3 at 300 px, 3 views
    python benchmarks/bench_inference.py --bundle bundles/cpu --data DIR [--data DIR2]

(a) plain: K x V separate batch-1 torch forward passes per slice, contiguous tensors, no_grad,
    the default allocator (no tcmalloc) - what a straightforward implementation does;
(b) ours, torch: `Predictor` with backend torch (views batched, channels_last, inference_mode),
    under tcmalloc when it is installed;
(c) ours, ONNX: `Predictor` with backend onnx on the bundle's export;
(d-f) ours, OpenVINO in float32, bfloat16, mixed (the stem and first three stages in float32,
    bfloat16 after) and int8 (NNCF post-training quantisation, the same first stages left in
    float32): each only
    if it passed `ml export`'s check against torch float32 on the bundle's out-of-fold slices
    (the largest probability difference, the ROC-AUC difference and the labels flipped at the
    active threshold are printed beside it). OpenVINO runs without tcmalloc, beside which it
    aborts.
Each runs in its own process; the plain loop runs first and again last, and ratios are against
the faster of the two (the machine's speed can drift within a run). Achieved GFLOP/s (forward
FLOPs counted by torch's FlopCounterMode) is set against a float32 matrix multiply measured
here. Each backend also predicts a 30-slice study from files (reading, preprocessing, every fold
and view) REPEATS times: the best, with the first in brackets (a user's first study after the
model is warm).

Without --bundle, a bundle of randomly initialised fold models is written to a temporary
folder: speed does not depend on the weights, and no pretrained download is needed. Its
"out-of-fold slices" for the check are phantom slices assigned to folds by patient (no fold
model trained on anything): the check then measures numerical agreement only.
The last line reads
`speedup_best=<x> backend=<name> precision=<p> max_prob_diff=<d> flips=<n>`: the fastest
variant that passed its check, against the plain loop.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
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
STUDY_SLICES = 30
PRECISIONS = ("f32", "bf16", "mixed", "int8")
LABELS = {
    "plain": "(a) plain loop, batch 1",
    "torch": "(b) ours, torch backend",
    "onnx": "(c) ours, ONNX Runtime",
    "openvino-f32": "(d) ours, OpenVINO float32",
    "openvino-bf16": "(e) ours, OpenVINO bfloat16",
    "openvino-mixed": "(e2) ours, OpenVINO float32 stem and 3 stages, bfloat16 after",
    "openvino-int8": "(f) ours, OpenVINO float32 stem and 3 stages, int8 after",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a trained bundle (default: random B3 x 5)")
    parser.add_argument(
        "--data", action="append", default=[], help="the bundle's training data, for the check"
    )
    parser.add_argument("--oof-slices", type=int, help="check on at most this many OOF slices")
    parser.add_argument("--backbone", default="tf_efficientnet_b3")
    parser.add_argument("--image-size", type=int, default=300)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=4, help="phantom slices scored per repeat")
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--slice-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--study-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or [str(Path(tmp) / "oof-phantoms")]
        bundle = args.bundle or make_random_bundle(
            Path(tmp) / "bench", args.backbone, args.image_size, args.folds, oof=Path(data[0])
        )
        slice_dir = write_phantom_slices(Path(tmp) / "slices", args.slices)
        study_dir = write_phantom_slices(Path(tmp) / "study", STUDY_SLICES)
        checks = export(bundle, data, args.oof_slices)
        names = ["plain", "torch", "onnx"]
        names += [f"openvino-{p}" for p in PRECISIONS if checks.get(p, {}).get("passed")]
        results = {
            name: run_worker(name, bundle, slice_dir, study_dir, tcmalloc=name in ("torch", "onnx"))
            for name in names
        }
        again = run_worker("plain", bundle, slice_dir, study_dir, tcmalloc=False)
        results["plain"] = plain_of_both(results["plain"], again)
        flops = forward_flops(bundle)
        matmul = run_worker("matmul", bundle, slice_dir, study_dir, tcmalloc=True)
    report(results, checks, flops, matmul["gflops"], bundle)


def plain_of_both(first: dict, last: dict) -> dict:
    """The plain loop, timed first and last in the run: the faster is the one every ratio is
    against (the smaller, cautious ratio), and both are kept to show how far the machine moved."""
    both = [first["ms_per_slice"], last["ms_per_slice"]]
    return {**first, "ms_per_slice": min(both), "runs_ms": both}


def report(results: dict, checks: dict, flops: dict, matmul_gflops: float, bundle: Path) -> None:
    from ml import check_summary

    per_slice = flops["per_image"] * flops["folds"] * flops["views"]
    plain_ms, onnx_ms = results["plain"]["ms_per_slice"], results["onnx"]["ms_per_slice"]
    print(
        f"bundle: {flops['backbone']} at {flops['image_size']} px, {flops['folds']} folds x "
        f"{flops['views']} views = {per_slice / 1e9:.1f} GFLOP per slice ({bundle.name})"
    )
    print(f"float32 matrix multiply here: {matmul_gflops:.1f} GFLOP/s")
    if "runs_ms" in results["plain"]:
        first, last = results["plain"]["runs_ms"]
        print(f"plain loop timed first and last: {first:.0f} and {last:.0f} ms per slice")
    width = max(len(LABELS[name]) for name in [*results, *(f"openvino-{p}" for p in checks)]) + 1
    print(
        f"{'approach':<{width}}{'ms/slice':>9}{'vs plain':>9}{'vs ONNX':>8}{'GFLOP/s':>9}"
        f"{'study ' + str(STUDY_SLICES) + ' (first)':>18}  allocator; check against torch f32"
    )
    for name, found in results.items():
        ms = found["ms_per_slice"]
        study = "-"
        if "study_s" in found:
            study = f"{found['study_s']:.1f} s ({found['study_first_s']:.1f} s)"
        print(
            f"{LABELS[name]:<{width}}{ms:>9.0f}{plain_ms / ms:>8.2f}x{onnx_ms / ms:>7.2f}x"
            f"{per_slice / (ms / 1000) / 1e9:>9.1f}{study:>18}  {found['allocator']}"
            f"{'; ' + check_summary(checks[name[9:]]) if name.startswith('openvino') else ''}"
        )
    for precision, check in checks.items():
        if not check.get("passed"):
            print(f"{LABELS['openvino-' + precision]:<{width}}not timed: {check_summary(check)}")
    best = min((n for n in results if n != "plain"), key=lambda n: results[n]["ms_per_slice"])
    fastest_gflops = per_slice / (results[best]["ms_per_slice"] / 1000) / 1e9
    print(
        f"speedup_torch={plain_ms / results['torch']['ms_per_slice']:.2f} "
        f"speedup_onnx={plain_ms / onnx_ms:.2f} peak_fraction={fastest_gflops / matmul_gflops:.2f}"
    )
    backend, _, precision = best.partition("-")
    check = checks.get(precision) if backend == "openvino" else None
    diff = f"{check['max_prob_diff']:.2g}" if check else "0"
    flips = check["flips"] if check else 0
    print(
        f"speedup_best={plain_ms / results[best]['ms_per_slice']:.2f} backend={backend} "
        f"precision={precision or 'f32'} max_prob_diff={diff} flips={flips}"
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


def worker_predictor(backend: str, precision: str = "f32"):
    def worker(args: argparse.Namespace) -> dict:
        from ml import Predictor

        predictor = Predictor.from_bundle(args.bundle, backend=backend, precision=precision)
        if (predictor.backend, predictor.precision) != (backend, precision):
            raise SystemExit(
                f"wanted {backend} {precision}, got {predictor.backend} {predictor.precision}: "
                f"{predictor.backend_note}"
            )
        paths = sorted(args.slice_dir.iterdir())
        prepared = [predictor.prepare(p) for p in paths]
        seconds = timed(lambda: predictor.predict_prepared(prepared))
        study = sorted(args.study_dir.iterdir())
        studies = [studied(predictor, study) for _ in range(REPEATS)]
        return {
            "ms_per_slice": seconds / len(prepared) * 1000,
            "study_first_s": studies[0],
            "study_s": min(studies),
            **_allocator(),
        }

    return worker


def studied(predictor, files: list[Path]) -> float:
    """Seconds to predict one study from its files: reading, preparing, every fold and view."""
    began = time.perf_counter()
    predictor.predict_study([p.read_bytes() for p in files], [p.name for p in files])
    return time.perf_counter() - began


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
    **{f"openvino-{p}": worker_predictor("openvino", p) for p in PRECISIONS},
    "matmul": worker_matmul,
}


# ---- set-up -----------------------------------------------------------------------------


def run_worker(
    name: str, bundle: Path, slice_dir: Path, study_dir: Path, *, tcmalloc: bool
) -> dict:
    from ml import OPT_OUT, find_tcmalloc

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    library = find_tcmalloc()
    if tcmalloc and library:
        env["LD_PRELOAD"] = library
    else:
        env[OPT_OUT] = "1"
    command = [sys.executable, __file__, "--worker", name, "--bundle", str(bundle)]
    command += ["--slice-dir", str(slice_dir), "--study-dir", str(study_dir)]
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


def export(bundle: Path, data: list[str], oof_slices: int | None) -> dict:
    """`ml export` in its own process (ONNX, then OpenVINO made and checked); its checks."""
    command = [sys.executable, "-m", "ml", "export", str(bundle), "--check-slices", "2"]
    for item in data:
        command += ["--data", item]
    if oof_slices:
        command += ["--oof-slices", str(oof_slices)]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ml export failed:\n{done.stderr}")
    print(f"ml export ({time.perf_counter() - began:.0f} s):")
    print("\n".join("  " + line for line in done.stdout.strip().splitlines()))
    manifest = json.loads((bundle / "openvino" / "manifest.json").read_text())
    return manifest["checks"]


def write_phantom_oof(bundle: Path, folder: Path, folds: int, patients: int = 12) -> None:
    """Phantom slices in class folders, listed in the random bundle's oof.csv by content and
    assigned to its folds by patient, so that `ml export` can run its check on them."""
    from ml import write_dataset

    write_dataset(folder, patients=patients, slices_per_patient=4, size=256, seed=3)
    with (bundle / "oof.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "patient_id", "fold", "label", "probability", "sha256", "source"])
        for file in sorted(folder.rglob("*.png")):
            patient = file.name.split(" ")[0]
            label = int(file.parent.name != "Normal")
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            fold = int(patient) % folds + 1
            rel = file.relative_to(folder)
            writer.writerow([rel, patient, fold, label, 0.5, digest, "phantoms"])


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
    path: Path, backbone: str, size: int, folds: int, oof: Path | None = None, **settings: object
) -> Path:
    """A complete bundle whose fold models are randomly initialised: for timing only.
    `oof`: a folder for phantom slices its oof.csv lists (write_phantom_oof).
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
    if oof is not None:
        write_phantom_oof(path, oof, folds)
    write_manifest(
        path,
        normalisation={"mean": list(built.mean), "std": list(built.std)},
        notes=["Benchmark bundle: randomly initialised weights, for timing only."],
    )
    return path


if __name__ == "__main__":
    main()
