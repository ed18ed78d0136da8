"""`python -m ml export BUNDLE`: the fold models as ONNX files, checked against torch.

The export is derived from the weights, so it lives in `BUNDLE/onnx/` with a manifest of its
own that records the hashes of the weights it was made from; the bundle's identity does not
change, and a stale export (weights changed since) is never used.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from ml.bundle import Bundle, load_bundle
from ml.data.tta import VIEWS
from ml.hashing import sha256_file
from ml.infer.prepare import prepare_slice
from ml.models.loading import load_fold_models

ONNX_DIR = "onnx"
# Largest accepted |p(onnx) - p(torch)|. A trained Lite0 fold's logits reach -10, where float32
# sums in another order differ by up to 4e-4 in the logit and 3e-6 in the probability: a bound on
# the logit refused exports that change nothing a user sees.
TOLERANCE = 1e-4
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def export_bundle(path: Path | str, *, data: Path | None = None, check_slices: int = 8) -> dict:
    """Export every fold, compare ONNX Runtime with torch on real slices, write the manifest."""
    import onnxruntime as ort

    bundle = load_bundle(path)
    cfg = bundle.train_config()
    norm = bundle.manifest["normalisation"]
    sources, described = _check_sources(data, check_slices, cfg.image_size)
    batch = torch.stack([prepare_slice(s, cfg, norm["mean"], norm["std"]).tensor for s in sources])
    batch = torch.cat([VIEWS[v](batch) for v in cfg.tta_views])
    out = bundle.path / ONNX_DIR
    out.mkdir(exist_ok=True)
    worst = worst_logit = 0.0
    for fold, model in enumerate(load_fold_models(bundle.all_fold_weights(), cfg), start=1):
        model = model.to(memory_format=torch.contiguous_format)
        target = out / f"fold_{fold}.onnx"
        export_module(model, batch[:1], target)
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            expected = model(batch).numpy()
        got = session.run(None, {"input": batch.numpy()})[0]
        diff = float(
            np.abs(expit(got.astype(np.float64)) - expit(expected.astype(np.float64))).max()
        )
        if diff > TOLERANCE:
            target.unlink()
            raise RuntimeError(
                f"fold {fold}: ONNX Runtime's probabilities differ from torch's by {diff:.2e} "
                f"(> {TOLERANCE}); the export was removed"
            )
        worst = max(worst, diff)
        worst_logit = max(worst_logit, float(np.abs(got - expected).max()))
    manifest = {
        "weights": bundle.weight_hashes(),
        "files": {p.name: sha256_file(p) for p in sorted(out.glob("fold_*.onnx"))},
        "max_abs_probability_difference": worst,
        "max_abs_logit_difference": worst_logit,
        "tolerance": TOLERANCE,
        "checked_on": f"{len(batch)} inputs: {described}, each in the views {list(cfg.tta_views)}",
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def export_matches(bundle: Bundle) -> bool:
    """True when the bundle's ONNX export exists, is intact and was made from these weights."""
    manifest = bundle.export_manifest(ONNX_DIR)
    if manifest is None:
        return False
    files = manifest["files"]
    if len(files) != bundle.folds:
        return False
    folder = bundle.path / ONNX_DIR
    return all((folder / n).is_file() and sha256_file(folder / n) == d for n, d in files.items())


def export_module(model: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    """One module (whose forward takes `x`) as ONNX with a dynamic batch size."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps
        torch.onnx.export(
            model,
            (example,),
            str(target),
            dynamo=True,
            input_names=["input"],
            output_names=["logit"],
            dynamic_shapes={"x": {0: batch}},
            external_data=False,
            verbose=False,
        )


def _check_sources(data: Path | None, count: int, size: int) -> tuple[list, str]:
    """Real slices from a data folder when given, else CT phantoms (a realistic-looking input)."""
    if data is None:
        return phantom_sources(count, size)
    files = listed_images(Path(data))
    if not files:
        raise FileNotFoundError(f"no PNG, JPEG or DICOM files under {data}")
    step = max(1, len(files) // count)
    return files[::step][:count], f"{min(count, len(files))} slices from {Path(data).name}"


def phantom_sources(count: int, size: int) -> tuple[list[bytes], str]:
    """`count` synthetic CT phantom slices of one patient as PNG bytes, and their description."""
    from PIL import Image

    from ml.data.synth import BRAIN_WINDOW, phantom_patient, window_to_uint8

    rng = np.random.default_rng(0)
    slices = phantom_patient(rng, n_slices=count, size=max(64, size), stroke=True)
    sources = []
    for phantom in slices:
        buffer = io.BytesIO()
        Image.fromarray(window_to_uint8(phantom.hu, *BRAIN_WINDOW)).save(buffer, format="PNG")
        sources.append(buffer.getvalue())
    return sources, f"{count} synthetic CT phantom slices"


def listed_images(data: Path) -> list[Path]:
    """The image files of a data folder, or those a CSV manifest lists (relative to its folder)."""
    if data.suffix.lower() == ".csv":
        with data.open(newline="") as handle:
            listed = [
                data.parent / row["path"] for row in csv.DictReader(handle) if row.get("path")
            ]
        return sorted(p for p in listed if p.is_file())
    return sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
