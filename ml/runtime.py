"""Process-level speed settings: the tcmalloc allocator when it is installed.

torch on the CPU allocates and frees many short-lived buffers; glibc's malloc handles that
pattern badly, and tcmalloc made CPU inference 2-3x faster on 2 cores here. It can only take
effect when loaded before Python starts, hence LD_PRELOAD and a re-exec of the CLI.

OpenVINO 2026.4 aborts ("free(): invalid size") when its CPU plugin starts in a process with
tcmalloc preloaded, so a command that will run OpenVINO keeps the default allocator, and the
predictor never picks OpenVINO in a process that has tcmalloc (it says so and falls back).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)
OPT_OUT = "ML_NO_TCMALLOC"  # set to 1 to keep the default allocator


def find_tcmalloc() -> str | None:
    return next((path for path in TCMALLOC_CANDIDATES if Path(path).is_file()), None)


def allocator() -> str:
    """'tcmalloc' when this process has it loaded, else 'default'."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "tcmalloc" if "tcmalloc" in maps else "default"


def reexec_with_tcmalloc(argv: list[str]) -> None:
    """Restart `python -m ml ARGV` with tcmalloc preloaded, when installed and not yet loaded."""
    preload = os.environ.get("LD_PRELOAD", "")
    library = find_tcmalloc()
    if library is None or "tcmalloc" in preload or os.environ.get(OPT_OUT):
        return
    if may_run_openvino(argv):
        return
    env = {**os.environ, "LD_PRELOAD": f"{library} {preload}".strip()}
    os.execve(sys.executable, [sys.executable, "-m", "ml", *argv], env)


def may_run_openvino(argv: list[str]) -> bool:
    """True for `ml export`, and for predict/evaluate of a bundle with an OpenVINO export and no
    --backend torch/onnx: those keep the default allocator (see the module's note)."""
    if not argv:
        return False
    if argv[0] == "export":
        return True
    if argv[0] not in ("predict", "evaluate"):
        return False
    options = dict(zip(argv, [*argv[1:], ""], strict=True))
    if options.get("--backend") in ("torch", "onnx"):
        return False
    bundle = options.get("--bundle")
    return bool(bundle) and (Path(bundle) / "openvino" / "manifest.json").is_file()


def pick_device(name: str):
    """cpu, cuda, or auto (cuda when torch sees a GPU), as a torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA GPU")
    return torch.device(name)


@contextmanager
def exact_float32():
    """cuDNN convolutions default to TF32 on recent GPUs; stored and served predictions are
    computed in true float32 so that they agree across devices."""
    import torch

    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous
