"""The OpenVINO backend: the fold models compiled for this CPU in float32, bfloat16 or int8.

What it runs comes from `BUNDLE/openvino/`, which `python -m ml export` writes (ml.infer.ov_export):
the int8 models (quantised with NNCF on the bundle's training slices, the stem and first stages
left in float32 as in `mixed`), each fold cut in two for
`mixed` (a float32 first part, a bfloat16 rest), and a manifest that records the weights they
were made from and, per precision, the check against torch float32 on the bundle's out-of-fold
slices. float32 and bfloat16 compile the ONNX export; bfloat16 is an inference-precision setting
of the CPU plugin, not a separate file.

A precision is used only when its check passed, for these weights, and this CPU supports it:
- a variant that failed its check is refused with the check's figures (`PrecisionRefused`);
- a CPU without bf16 (or int8) falls back to float32 and says so (`Choice.note`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ml.bundle import Bundle
from ml.errors import UserError
from ml.hashing import sha256_file

OPENVINO_DIR = "openvino"
# mixed: the stem and first stages in float32, the rest in bfloat16. A fine-tuned network can
# amplify what its first layers round off: on a trained Lite0 the stem alone in bf16 moved the
# probability by up to 0.2, every later stage by far less (benchmarks/RESULTS.md).
PRECISIONS = ("f32", "bf16", "mixed", "int8")
# OpenVINO's name for each precision in OPTIMIZATION_CAPABILITIES
CAPABILITY = {"f32": "FP32", "bf16": "BF16", "mixed": "BF16", "int8": "INT8"}


class PrecisionRefused(UserError):
    """A reduced-precision variant that failed its accuracy check, or was never checked."""


@dataclass(frozen=True)
class Chain:
    """Two compiled models run one after the other, called like one compiled model."""

    first: Any
    second: Any

    def __call__(self, batch: np.ndarray) -> Any:
        return self.second(self.first(batch)[0])


@dataclass(frozen=True)
class Choice:
    """The precision a process runs, and why it differs from the one asked for (if it does)."""

    precision: str
    note: str | None = None


def installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def cpu_capabilities() -> frozenset[str]:
    """The precisions this CPU runs natively, as OpenVINO reports them (mixed needs bf16)."""
    import openvino as ov

    reported = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return frozenset(name for name, cap in CAPABILITY.items() if cap in reported)


def cpu_threads() -> int:
    """The cores this process may use: its affinity mask, capped by a cgroup CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = Path("/sys/fs/cgroup/cpu.max")
    try:
        limit, period = quota.read_text().split()
        if limit != "max":
            count = min(count or 1, max(1, int(int(limit) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count or 1)


def read_manifest(bundle: Bundle) -> dict | None:
    """The export's manifest when it exists, is intact and was made from these weights."""
    manifest = bundle.export_manifest(OPENVINO_DIR)
    if manifest is None:
        return None
    folder = bundle.path / OPENVINO_DIR
    for name, digest in manifest.get("files", {}).items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            return None
    return manifest


def passed(manifest: dict | None) -> list[str]:
    """The precisions whose check passed, in PRECISIONS order."""
    checks = (manifest or {}).get("checks", {})
    return [p for p in PRECISIONS if checks.get(p, {}).get("passed")]


def choose(bundle: Bundle, requested: str, manifest: dict | None = None) -> Choice:
    """The precision to run for `requested` (auto or one of PRECISIONS) on this CPU.

    auto: the fastest precision that passed its check and this CPU supports, by the timings
    the export measured. An explicit precision that failed (or never had) its check is refused;
    one this CPU lacks falls back to float32 with a note. `manifest`: read_manifest's, when
    the caller has it already.
    """
    manifest = manifest or read_manifest(bundle)
    if manifest is None:
        raise PrecisionRefused(
            f"{bundle.path} has no OpenVINO export matching its weights; "
            f"run: python -m ml export {bundle.path} --data TRAINING_DATA"
        )
    supported = cpu_capabilities()
    usable = [p for p in passed(manifest) if p in supported]
    if requested == "auto":
        if not usable:
            raise PrecisionRefused(f"no OpenVINO precision of {bundle.path} passed its check")
        timings = manifest.get("ms_per_slice", {})
        return Choice(min(usable, key=lambda p: timings.get(f"openvino/{p}", float("inf"))))
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose auto or {', '.join(PRECISIONS)}")
    check = manifest.get("checks", {}).get(requested)
    if check is None or not check.get("passed"):
        raise PrecisionRefused(refusal(requested, check))
    if requested not in supported:
        fallback = "f32" if "f32" in usable else None
        if fallback is None:
            raise PrecisionRefused(f"this CPU has no {requested} and float32 was not verified")
        return Choice(fallback, f"this CPU has no native {requested}; running float32 instead")
    return Choice(requested)


def refusal(precision: str, check: dict | None) -> str:
    """Why a precision may not be used, with the figures of its check."""
    if check is None:
        return f"{precision} was not checked for this bundle; run python -m ml export with --data"
    if check.get("error"):
        return f"{precision} is refused for this bundle: {check['error']}"
    failed = "; ".join(check.get("failures", [])) or "see the manifest"
    slices = check.get("slices", "?")
    return f"{precision} failed its check on {slices} out-of-fold slices: {failed}"


def compile_fold(
    bundle: Bundle, fold: int, precision: str, threads: int | None = None, core: Any = None
) -> Any:
    """One fold model compiled for the CPU at `precision`."""
    import openvino as ov

    core = core or ov.Core()
    folder = bundle.path / OPENVINO_DIR
    if precision == "mixed":
        early = core.read_model(str(folder / f"fold_{fold}.mixed_early.xml"))
        late = core.read_model(str(folder / f"fold_{fold}.mixed_late.xml"))
        return Chain(
            core.compile_model(early, "CPU", compile_config("f32", threads)),
            core.compile_model(late, "CPU", compile_config("bf16", threads)),
        )
    if precision == "int8":
        model = core.read_model(str(folder / f"fold_{fold}.int8.xml"))
    else:
        model = core.read_model(str(bundle.path / "onnx" / f"fold_{fold}.onnx"))
    return core.compile_model(model, "CPU", compile_config(precision, threads))


def compile_config(precision: str, threads: int | None = None) -> dict[str, str]:
    """Plugin settings: latency-oriented, one stream, the process's cores, and the precision
    (this plugin otherwise picks bf16 by itself on CPUs that have it)."""
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads or cpu_threads()),
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }


def run(compiled: Any, batch: np.ndarray) -> np.ndarray:
    """Logits (N,) of one compiled fold model for a float32 batch (N, C, H, W)."""
    return np.asarray(compiled(np.ascontiguousarray(batch, dtype=np.float32))[0]).reshape(-1)


def check_summary(check: dict) -> str:
    """One precision's check in a line."""
    if check.get("error"):
        return f"refused: {check['error']}"
    auc, resolved = check.get("roc_auc_diff"), check.get("roc_auc_diff_resolved")
    untied = "" if resolved is None else f" ({resolved:+.4f} beyond ties)"
    figures = (
        f"largest probability difference {check['max_prob_diff']:.2g}, "
        + ("" if auc is None else f"ROC-AUC difference {auc:+.4f}{untied}, ")
        + f"{check['flips']} of {check['slices']} labels flipped"
    )
    verdict = "passed" if check["passed"] else "refused (" + "; ".join(check["failures"]) + ")"
    return f"{verdict}: {figures}"
