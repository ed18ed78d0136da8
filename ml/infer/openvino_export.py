"""`python -m ml export BUNDLE --data DIR`: the OpenVINO variants, each checked before use.

For every precision (f32, bf16, mixed, int8) and every fold model, the bundle's out-of-fold slices
(found in the given data by content, through `oof.csv`'s hashes) are scored by that fold's
model in torch float32 and in the variant; the check records
- the largest probability difference,
- the ROC-AUC of each against the slices' labels and the difference; the criterion counts only
  reorderings of slice pairs that torch scored more than TIE_MARGIN apart (below that torch
  itself makes no distinction worth keeping: a model with random weights scores every slice
  within a hair of the others, and any rounding reorders them),
- how many slices change label at the bundle's active slice threshold,
and passes when all three are within LIMITS. int8 models are quantised by NNCF
(post-training, no fine-tuning), each fold calibrated on slices of its own training part, so
that its check runs on slices it has never seen; the stem and first FLOAT_STAGES stages stay in
float32, as in `mixed`. Each variant's speed on this machine (ms per
slice for the whole ensemble) is measured here too: `auto` picks the fastest one that passed.

Without data, only float32 is checked, against torch on synthetic phantoms.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from ml.bundle import load_bundle, read_rows
from ml.data.tta import VIEWS
from ml.hashing import sha256_file
from ml.infer import openvino as ov_backend
from ml.infer.onnx import export_bundle, export_matches, listed_images, phantom_sources
from ml.infer.prepare import order_slices
from ml.metrics.scores import roc_auc
from ml.models.network import early_stages

LIMITS = {"max_prob_diff": 0.05, "max_auc_diff": 0.005, "max_flip_share": 0.005}
TIE_MARGIN = 1e-3  # probability: torch scores closer than this count as a tie in the ROC-AUC test
NEEDS_DATA = (
    "not checked: a reduced precision is judged on the bundle's out-of-fold slices; "
    "give its training data with --data"
)
CALIBRATION_SLICES = 128  # per fold, from its training part
# mixed: stages kept in float32 after the stem. On a trained Lite0 (1,000 OOF slices) bf16 from
# stage 1 on moved probabilities by up to 0.098, from stage 2 on 0.041, from stage 3 on 0.031
# (bf16 throughout: 0.38); one fold model, 3 views: 8.3 ms mixed from stage 3, against 11.7 ms
# in float32 and 6.8 ms in bf16 (benchmarks/RESULTS.md).
FLOAT_STAGES = 3
CHUNK = 16  # slices per forward pass
TIMED_SLICES = 4


@dataclass
class CheckSet:
    """The slices a check runs on, as each fold sees them: (N, C, H, W) tensors and labels."""

    tensors: torch.Tensor
    labels: np.ndarray
    folds: np.ndarray  # the fold that did not train on each slice (0: none, phantoms)
    described: str


def export_openvino(
    path: Path | str,
    data: Sequence[Path] = (),
    *,
    precisions: Sequence[str] = ov_backend.PRECISIONS,
    limits: dict[str, float] | None = None,
    calibration_slices: int = CALIBRATION_SLICES,
    max_slices: int | None = None,
) -> dict:
    """Make, check and time each precision; write BUNDLE/openvino/manifest.json."""
    import openvino as ov

    limits = {**LIMITS, **(limits or {})}
    bundle = load_bundle(path)
    if not export_matches(bundle):
        export_bundle(bundle.path)
    from ml.infer.predictor import Predictor

    reference = Predictor(bundle, backend="torch")
    checks = _oof_set(reference, data, max_slices) if data else _phantom_set(reference)
    threshold = reference.point.threshold
    torch_probs = _fold_probs(checks, reference.views, _torch_runners(reference))
    out = bundle.path / ov_backend.OPENVINO_DIR
    out.mkdir(exist_ok=True)
    for stale in out.glob("fold_*"):
        stale.unlink()
    core = ov.Core()
    results: dict[str, dict] = {}
    timings = {"torch/f32": _time(reference.probabilities, checks)}
    onnx = Predictor(bundle, backend="onnx", views=reference.views)
    timings["onnx/f32"] = _time(onnx.probabilities, checks)
    for precision in precisions:
        if precision != "f32" and checks.folds.max() == 0:
            results[precision] = {"passed": False, "error": NEEDS_DATA}
            continue
        try:
            if precision == "int8":
                kept = _quantise(reference, checks, calibration_slices, core, out)
            if precision == "mixed":
                _split(reference, checks.tensors[:1], core, out)
            runners = {
                k: _ov_runner(ov_backend.compile_fold(bundle, k, precision, core=core))
                for k in range(1, bundle.folds + 1)
            }
        except Exception as exc:  # recorded: the variant is then refused
            results[precision] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        probs = _fold_probs(checks, reference.views, runners)
        results[precision] = judge(torch_probs, probs, checks.labels, threshold, limits)
        if precision == "int8":
            results[precision]["float_convolutions"] = kept
        ensemble = _ensemble_runner(list(runners.values()), reference.views)
        timings[f"openvino/{precision}"] = _time(ensemble, checks)
    manifest = {
        "weights": bundle.weight_hashes(),
        "files": {p.name: sha256_file(p) for p in sorted(out.glob("fold_*"))},
        "checks": results,
        "limits": limits,
        "tie_margin": TIE_MARGIN,
        "threshold": threshold,
        "checked_on": checks.described,
        "ms_per_slice": {name: round(ms, 1) for name, ms in timings.items()},
        "machine": machine(core),
        "openvino": ov.__version__,
        "nncf": _nncf_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def judge(
    expected: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    limits: dict[str, float],
) -> dict:
    """The check's figures for one variant, and whether they are within the limits."""
    diff = float(np.abs(got - expected).max()) if len(got) else 0.0
    flips = int(np.sum((got >= threshold) != (expected >= threshold)))
    two_classes = len(np.unique(labels)) == 2
    auc_torch = roc_auc(labels, expected) if two_classes else None
    auc_variant = roc_auc(labels, got) if two_classes else None
    auc_diff = None if auc_torch is None else float(auc_variant - auc_torch)
    resolved = resolved_auc_diff(labels, expected, got) if two_classes else None
    failures = []
    if diff > limits["max_prob_diff"]:
        failures.append(f"probability differs by up to {diff:.4f} (> {limits['max_prob_diff']})")
    if resolved is not None and abs(resolved) > limits["max_auc_diff"]:
        failures.append(
            f"ROC-AUC moves by {resolved:+.4f} on pairs torch scored over {TIE_MARGIN:g} apart "
            f"(> {limits['max_auc_diff']})"
        )
    if flips > limits["max_flip_share"] * len(got):
        failures.append(
            f"{flips} of {len(got)} slices change label at threshold {threshold:.3f} "
            f"(> {limits['max_flip_share']:.1%})"
        )
    return {
        "passed": not failures,
        "failures": failures,
        "slices": len(got),
        "max_prob_diff": diff,
        "mean_prob_diff": float(np.abs(got - expected).mean()) if len(got) else 0.0,
        "roc_auc_torch": auc_torch,
        "roc_auc": auc_variant,
        "roc_auc_diff": auc_diff,
        "roc_auc_diff_resolved": resolved,
        "flips": flips,
    }


def resolved_auc_diff(
    labels: np.ndarray, expected: np.ndarray, got: np.ndarray, margin: float = TIE_MARGIN
) -> float:
    """The ROC-AUC difference (got - expected) from the (positive, negative) pairs that
    `expected` scores more than `margin` apart; a pair closer than that adds nothing."""
    labels = np.asarray(labels)
    positives, negatives = labels == 1, labels == 0
    total = float(positives.sum()) * float(negatives.sum())
    change = 0.0
    neg_expected, neg_got = expected[negatives], got[negatives]
    all_pos_expected, all_pos_got = expected[positives], got[positives]
    for start in range(0, len(all_pos_expected), 256):  # (256 x negatives) pairs at a time
        pos_expected = all_pos_expected[start : start + 256, None]
        pos_got = all_pos_got[start : start + 256, None]
        apart = np.abs(pos_expected - neg_expected) > margin
        before = np.sign(pos_expected - neg_expected)
        after = np.sign(pos_got - neg_got)
        change += float(((after - before) * apart).sum()) / 2  # each order counts 1, a tie 1/2
    return change / total if total else 0.0


def machine(core=None) -> dict:
    """What the timings and capabilities were measured on."""
    name = platform.processor() or platform.machine()
    if core is not None:
        name = core.get_property("CPU", "FULL_DEVICE_NAME")
    return {
        "cpu": name,
        "threads": ov_backend.cpu_threads(),
        "capabilities": sorted(ov_backend.cpu_capabilities()),
    }


# ---- the slices ----------------------------------------------------------------------------


def _oof_set(predictor, data: Sequence[Path], max_slices: int | None) -> CheckSet:
    """The bundle's out-of-fold slices found under `data`, matched by content."""
    rows = {
        row["sha256"]: row
        for row in read_rows(predictor.bundle.path / "oof.csv") or []
        if row["fold"] not in ("", "holdout")
    }
    found: dict[str, Path] = {}
    for folder in data:
        for file in listed_images(Path(folder)):
            digest = sha256_file(file)
            if digest in rows:
                found.setdefault(digest, file)
    if not found:
        raise FileNotFoundError(
            f"none of the bundle's {len(rows)} out-of-fold slices is under "
            + ", ".join(map(str, data))
        )
    chosen = sorted(found, key=lambda d: (rows[d]["source"], rows[d]["patient_id"], str(found[d])))
    if max_slices and len(chosen) > max_slices:
        step = len(chosen) / max_slices
        chosen = [chosen[int(i * step)] for i in range(max_slices)]
    by_patient: dict[tuple[str, str], list[str]] = {}
    for digest in chosen:
        patient = (rows[digest]["source"], rows[digest]["patient_id"])
        by_patient.setdefault(patient, []).append(digest)
    tensors, labels, folds = [], [], []
    for digests in by_patient.values():
        prepared = [predictor.prepare(found[d], d) for d in digests]
        ordered, _ = order_slices(prepared)
        for p in predictor.in_context(ordered):
            tensors.append(p.tensor)
            labels.append(int(rows[p.name]["label"]))
            folds.append(int(rows[p.name]["fold"]))
    return CheckSet(
        torch.stack(tensors),
        np.array(labels),
        np.array(folds),
        f"{len(tensors)} of the bundle's {len(rows)} out-of-fold slices, each scored by the "
        f"fold model that did not train on it, views {list(predictor.views)}",
    )


def _phantom_set(predictor, count: int = 8) -> CheckSet:
    sources, described = phantom_sources(count, predictor.cfg.image_size)
    tensors = torch.stack([predictor.prepare(s).tensor for s in sources])
    return CheckSet(tensors, np.zeros(len(sources), int), np.zeros(len(sources), int), described)


# ---- running ---------------------------------------------------------------------------------

Runner = Callable[[np.ndarray], np.ndarray]  # (N, C, H, W) float32 -> logits (N,)


def _torch_runners(predictor) -> dict[int, Runner]:
    from ml.runtime import exact_float32

    def runner(model: torch.nn.Module) -> Runner:
        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), exact_float32():
                x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
                return model(x).float().reshape(-1).numpy()

        return run

    return {k: runner(m) for k, m in zip(predictor.folds, predictor.torch_models(), strict=True)}


def _ov_runner(compiled) -> Runner:
    return lambda batch: ov_backend.run(compiled, batch)


def _fold_probs(checks: CheckSet, views: Sequence[str], runners: dict[int, Runner]) -> np.ndarray:
    """Each slice's view-averaged probability from its own fold's model (every fold's mean for
    phantoms, which no fold trained on)."""
    out = np.zeros(len(checks.tensors))
    for k, run in runners.items():
        rows = np.flatnonzero((checks.folds == k) | (checks.folds == 0))
        for start in range(0, len(rows), CHUNK):
            part = rows[start : start + CHUNK]
            probs = _view_probs(run, checks.tensors[part], views)
            out[part] += probs if checks.folds[part[0]] else probs / len(runners)
    return out


def _view_probs(run: Runner, batch: torch.Tensor, views: Sequence[str]) -> np.ndarray:
    viewed = torch.cat([VIEWS[v](batch) for v in views]).numpy()
    logits = run(viewed).reshape(len(views), len(batch))
    return expit(logits).mean(axis=0)


def _ensemble_runner(runners: list[Runner], views: Sequence[str]) -> Callable:
    def run(batch: torch.Tensor) -> np.ndarray:
        return np.stack([_view_probs(r, batch, views) for r in runners])

    return run


def _time(probabilities: Callable, checks: CheckSet) -> float:
    """Milliseconds per slice of the whole ensemble on TIMED_SLICES slices, best of 3."""
    batch = checks.tensors[:TIMED_SLICES]
    probabilities(batch)  # warm-up
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        probabilities(batch)
        best = min(best, time.perf_counter() - began)
    return 1000 * best / len(batch)


# ---- mixed -------------------------------------------------------------------------------------


class Part(torch.nn.Module):
    """Some of a fold model's layers, in order, exported on their own. Not `nn.Sequential`:
    `export_module` names the dynamic batch axis after a `forward(x)`, and Sequential's argument
    is called `input`."""

    def __init__(self, *layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def split_early_stages(model: torch.nn.Module) -> tuple[Part, Part]:
    """(the stem and the first FLOAT_STAGES stages, the rest up to the logit) of an EfficientNet
    fold model."""
    net = model.backbone
    if model.map_head and model.head.fuse is not None:
        raise ValueError("mixed precision does not cut a stride-8 lesion map, which reads a stage")
    early = Part(*early_stages(net, FLOAT_STAGES))
    pool = [] if model.map_head else [net.global_pool]  # a lesion-map head pools itself
    late = Part(*net.blocks[FLOAT_STAGES:], net.conv_head, net.bn2, *pool, model.head)
    return early.eval(), late.eval()


def _split(predictor, example: torch.Tensor, core, out: Path) -> None:
    """Each fold cut in two and saved as OpenVINO models, after checking that the two parts
    chained give the whole model's logits."""
    import tempfile

    import openvino as ov

    from ml.infer.onnx import export_module

    for k, model in zip(predictor.folds, predictor.torch_models(), strict=True):
        model = model.cpu().to(memory_format=torch.contiguous_format)
        early, late = split_early_stages(model)
        with torch.no_grad():
            x = example.detach().clone().contiguous()
            middle = early(x)
            if not torch.allclose(late(middle), model(x), atol=1e-5):
                raise RuntimeError(f"fold {k}: the two parts do not give the whole model's logit")
        with tempfile.TemporaryDirectory() as tmp:
            for name, part, first in (("early", early, x), ("late", late, middle.contiguous())):
                onnx_file = Path(tmp) / f"{name}.onnx"
                export_module(part, first, onnx_file)
                target = out / f"fold_{k}.mixed_{name}.xml"
                ov.save_model(core.read_model(str(onnx_file)), str(target), compress_to_fp16=False)


# ---- int8 --------------------------------------------------------------------------------------


def _quantise(predictor, checks: CheckSet, count: int, core, out: Path) -> int:
    """Post-training int8 quantisation of each fold, calibrated on its own training slices. As in
    `mixed`, the stem and the first FLOAT_STAGES stages of an EfficientNet stay in float32 (NNCF's
    ignored scope): quantised, they moved a trained Lite0's probabilities by up to 0.96. Returns
    how many convolutions each fold keeps in float32."""
    import nncf
    import openvino as ov

    bundle = predictor.bundle
    rng = np.random.default_rng(0)
    kept = 0
    for k, torch_model in zip(predictor.folds, predictor.torch_models(), strict=True):
        pool = np.flatnonzero(checks.folds != k)
        picked = rng.choice(pool, size=min(count, len(pool)), replace=False)
        views = list(VIEWS)
        samples = [
            VIEWS[views[i % len(views)]](checks.tensors[j : j + 1]).numpy()
            for i, j in enumerate(picked)
        ]
        model = core.read_model(str(bundle.path / "onnx" / f"fold_{k}.onnx"))
        floats = float_convolutions(torch_model, model)
        kept = len(floats)
        quantised = nncf.quantize(
            model,
            nncf.Dataset(samples),
            subset_size=len(samples),
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=floats) if floats else None,
        )
        ov.save_model(quantised, str(out / f"fold_{k}.int8.xml"), compress_to_fp16=False)
    return kept


CONVOLUTIONS = ("Convolution", "GroupConvolution")


def float_convolutions(model: torch.nn.Module, converted) -> list[str]:
    """Names, in the OpenVINO model `converted` of the torch `model`, of the convolutions of the
    stem and the first FLOAT_STAGES stages; none for a backbone that is not an EfficientNet.

    The exporter names nodes by number, not by module, so they are found by order: every later
    layer depends on all of them, so they come first in the graph's topological order."""
    try:
        early = early_stages(model.backbone, FLOAT_STAGES)
    except ValueError:
        return []
    count = sum(isinstance(m, torch.nn.Conv2d) for stage in early for m in stage.modules())
    names = [
        op.get_friendly_name()
        for op in converted.get_ordered_ops()
        if op.get_type_name() in CONVOLUTIONS
    ]
    total = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if len(names) != total:
        raise RuntimeError(
            f"the exported model has {len(names)} convolutions, the torch model {total}: "
            "cannot tell which to keep in float32"
        )
    return names[:count]


def _nncf_version() -> str | None:
    try:
        import nncf
    except ImportError:
        return None
    return nncf.__version__
