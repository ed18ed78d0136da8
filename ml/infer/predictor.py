"""The ensemble predictor: every prediction the web app, the API and the CLI make comes from here.

A slice's probability is the mean over the K fold models of the view-aggregated probability over
the test-time views (identity, horizontal and vertical flip by default). Preprocessing is the
training preprocessing, read from the bundle: the same reader, windows, resize and normalisation,
so that a fold model run here on a training slice gives the probability stored in `oof.csv`.

Backends: `torch` (channels_last, inference_mode, all views of a batch in one pass per fold),
`onnx` (ONNX Runtime on the files `python -m ml export` wrote) and `openvino` (those files compiled
by OpenVINO in float32, bfloat16 or int8; ml.infer.openvino). `auto` takes the fastest variant the
export measured among those that are installed, match the weights and passed their check; without
an OpenVINO export, ONNX when it matches the weights, else torch. A backend or precision asked for
but not available falls back and says why in `backend_note`; a precision that failed its check is
refused (PrecisionRefused).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from ml.bundle import Bundle, BundleError, load_bundle
from ml.config import BACKENDS, PRECISIONS, VIEW_AGGREGATIONS, TrainConfig
from ml.data.context import stack_neighbours, uses_neighbours
from ml.data.headct import NOT_HEAD_CT
from ml.data.transforms import to_tensor
from ml.data.tta import VIEWS, build_views
from ml.infer import openvino as ov_backend
from ml.infer.onnx import export_matches
from ml.infer.prepare import Prepared, order_slices, prepare_slice
from ml.metrics import scores as metrics
from ml.metrics.thresholds import OperatingPoint, find_point, read_thresholds
from ml.models.loading import load_fold_models
from ml.runtime import allocator, exact_float32, pick_device

LABELS = ("Normal", "Stroke")
# Slices per forward pass on the CPU (each pass runs every view). A 30-slice study in one pass
# took 2.4x (ONNX Runtime) and 2.3x (torch) longer per slice than in passes of 2 here: the
# activations of 90 images at once leave the caches. benchmarks/RESULTS.md has the figures.
SLICES_PER_PASS = 2


@dataclass(frozen=True)
class SlicePrediction:
    name: str
    probability: float  # ensemble: mean over folds of the view-aggregated probability
    fold_probabilities: list[float]
    fold_std: float  # spread of the fold models
    view_std: float  # spread of the test-time views (of the fold mean)
    label: str  # at the active operating point
    threshold: float
    operating_point: str
    uncertain: bool
    uncertain_reasons: list[str]
    bundle_id: str
    info: dict[str, Any] = field(default_factory=dict)
    input_warning: str | None = None  # why the slice does not look like a head CT, if it does not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudyPrediction:
    score: float
    aggregation: str
    label: str
    threshold: float
    slices: list[SlicePrediction]  # in slice order
    order_by: str  # how the slices were ordered
    bundle_id: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "slices": [s.to_dict() for s in self.slices]}


@dataclass(frozen=True)
class Explanation:
    name: str
    method: str
    heatmap: np.ndarray  # float32 (H, W) in [0, 1] at the network input size
    overlay_png: bytes  # the slice as the model saw it, with the map blended over it
    faithfulness: dict[str, float]  # probability drop: top-10% of the map masked vs random 10%


class Predictor:
    """Loads a bundle's fold models once; predicts slices, batches and studies."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        backend: str = "auto",
        precision: str = "auto",
        views: Sequence[str] | None = None,
        view_aggregation: str = "mean",
        operating_point: str | None = None,
        folds: Sequence[int] | None = None,
        device: str = "cpu",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if view_aggregation not in VIEW_AGGREGATIONS:
            raise ValueError(
                f"unknown view aggregation {view_aggregation!r}; "
                f"choose one of {', '.join(VIEW_AGGREGATIONS)}"
            )
        self.bundle = bundle
        self.cfg: TrainConfig = bundle.train_config()
        self.folds = tuple(folds) if folds else tuple(range(1, bundle.folds + 1))
        if not set(self.folds) <= set(range(1, bundle.folds + 1)):
            raise ValueError(f"folds must be among 1..{bundle.folds}, got {list(self.folds)}")
        self.views = tuple(views or self.cfg.tta_views)
        build_views(self.views)  # validates the names
        self.view_aggregation = view_aggregation
        norm = bundle.manifest["normalisation"]
        self.mean, self.std = tuple(norm["mean"]), tuple(norm["std"])
        self.points, active = read_thresholds(bundle.path / "thresholds.json")
        self.point = find_point(self.points, operating_point or active)
        patient_points, patient_active = read_thresholds(bundle.path / "patient_thresholds.json")
        self.study_point = find_point(patient_points, patient_active)
        self.uncertainty = json.loads((bundle.path / "uncertainty.json").read_text())
        self.backend, self.precision, self.backend_note = resolve_backend(
            bundle, backend, precision
        )
        self.device = pick_device(device)
        self._torch_models: list[torch.nn.Module] | None = None
        self._sessions: list[Any] | None = None
        self._compiled: list[Any] | None = None

    @classmethod
    def from_bundle(cls, path: Path | str, backend: str = "auto", **options: Any) -> Predictor:
        return cls(load_bundle(path), backend=backend, **options)

    # ---- preprocessing -------------------------------------------------------------------

    def prepare(self, source: Path | str | bytes, name: str | None = None) -> Prepared:
        """Read, window, resize and normalise one slice exactly as training did."""
        return prepare_slice(source, self.cfg, self.mean, self.std, name)

    def prepare_at(
        self,
        ordered: Sequence[Path | str | bytes],
        index: int,
        names: Sequence[str | None] | None = None,
    ) -> Prepared:
        """Slice `index` of a study (sources in slice order) as the bundle scores it.

        Under 2.5D it is read with its two neighbours; memory stays at three slices however
        long the study is, so a caller can score a study slice by slice.
        """
        names = list(names) if names is not None else [None] * len(ordered)
        if not uses_neighbours(self.cfg.input_mode) or len(ordered) < 2:
            return self.prepare(ordered[index], names[index])
        around = (max(index - 1, 0), index, min(index + 1, len(ordered) - 1))
        return self.in_context([self.prepare(ordered[i], names[i]) for i in around])[1]

    def in_context(self, ordered: Sequence[Prepared]) -> list[Prepared]:
        """Slices of one patient, in slice order, as the bundle's input mode feeds them.

        Under 2.5D (`input_mode: neighbours` or `neighbours_aligned`) each slice's channels
        become its neighbours k-1, k, k+1, as in training; otherwise, and for a lone slice,
        nothing changes.
        """
        if not uses_neighbours(self.cfg.input_mode) or len(ordered) < 2:
            return list(ordered)
        last = len(ordered) - 1
        rows = np.array([[max(i - 1, 0), i, min(i + 1, last)] for i in range(len(ordered))])
        frames = None
        if self.cfg.input_mode == "neighbours_aligned":
            frames = np.array([p.frame for p in ordered])
        stacked = stack_neighbours(np.stack([p.windowed for p in ordered]), rows, frames)
        return [
            replace(p, tensor=to_tensor(image, self.cfg.in_chans, self.mean, self.std))
            for p, image in zip(ordered, stacked, strict=True)
        ]

    # ---- the numbers -----------------------------------------------------------------------

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Probabilities of shape (N, K folds, V views) for a normalised batch (N, C, H, W),
        SLICES_PER_PASS slices at a time on the CPU (a GPU takes the batch at once)."""
        on_gpu = self.backend == "torch" and self.device.type != "cpu"
        step = max(1, len(batch)) if on_gpu else SLICES_PER_PASS
        parts = [self._pass(batch[i : i + step]) for i in range(0, len(batch), step)]
        if not parts:
            return np.zeros((0, self.bundle.folds, len(self.views)))
        return np.concatenate(parts)

    def _pass(self, batch: torch.Tensor) -> np.ndarray:
        viewed = torch.cat([VIEWS[name](batch) for name in self.views])  # (V*N, C, H, W)
        n = batch.shape[0]
        if self.backend == "onnx":
            outputs = [session.run(None, {"input": viewed.numpy()})[0] for session in self._onnx()]
            logits = np.stack([o.reshape(len(self.views), n) for o in outputs])  # (K, V, N)
        elif self.backend == "openvino":
            batch_np = viewed.numpy()
            outputs = [ov_backend.run(model, batch_np) for model in self._openvino()]
            logits = np.stack([o.reshape(len(self.views), n) for o in outputs])
        else:
            models = self.torch_models()  # built outside inference mode: Grad-CAM needs autograd
            with torch.inference_mode(), exact_float32():
                viewed = viewed.to(self.device).contiguous(memory_format=torch.channels_last)
                logits = np.stack(
                    [
                        model(viewed).float().reshape(len(self.views), n).cpu().numpy()
                        for model in models
                    ]
                )
        return expit(logits).transpose(2, 0, 1)

    def predict(
        self, sources: Sequence[Path | str | bytes], names: Sequence[str] | None = None
    ) -> list[SlicePrediction]:
        """Predict each slice; raises UnreadableImage for a file that is not a CT slice."""
        names = list(names) if names is not None else [None] * len(sources)
        prepared = [self.prepare(s, n) for s, n in zip(sources, names, strict=True)]
        return self.predict_prepared(prepared)

    def predict_prepared(
        self,
        prepared: Sequence[Prepared],
        *,
        point: OperatingPoint | None = None,
        half_width: float | None = None,
    ) -> list[SlicePrediction]:
        """Predict prepared slices; label them at `point` (default: the bundle's active one).

        A caller that keeps its own operating points (the web app) passes the point and the
        uncertainty band's half-width measured on OOF data at that point's threshold.
        """
        if not prepared:
            return []
        probs = self.probabilities(torch.stack([p.tensor for p in prepared]))
        point = point or self.point
        if half_width is None:
            half_width = self.uncertainty["half_width"]
        return [self._summarise(p, probs[i], point, half_width) for i, p in enumerate(prepared)]

    def predict_study(
        self,
        sources: Sequence[Path | str | bytes],
        names: Sequence[str] | None = None,
        *,
        aggregation: str | None = None,
    ) -> StudyPrediction:
        """Several slices of one patient: per-slice scores in slice order and one study score."""
        names = list(names) if names is not None else [None] * len(sources)
        prepared = [self.prepare(s, n) for s, n in zip(sources, names, strict=True)]
        prepared, order_by = order_slices(prepared)
        prepared = self.in_context(prepared)
        return self.study_from_slices(self.predict_prepared(prepared), order_by, aggregation)

    def study_from_slices(
        self,
        slices: Sequence[SlicePrediction],
        order_by: str,
        aggregation: str | None = None,
        *,
        point: OperatingPoint | None = None,
    ) -> StudyPrediction:
        """The study score of slices already predicted (and ordered), at the patient threshold.

        Lets a caller predict slice by slice (to report progress) and still score the study
        exactly as `predict_study` does.
        """
        method = aggregation or self.cfg.study_aggregation
        score = metrics.aggregate([s.probability for s in slices], method)
        threshold = (point or self.study_point).threshold
        return StudyPrediction(
            score=score,
            aggregation=method,
            label=LABELS[int(score >= threshold)],
            threshold=threshold,
            slices=list(slices),
            order_by=order_by,
            bundle_id=self.bundle.id,
        )

    def explain(
        self,
        source: Path | str | bytes,
        *,
        method: str = "gradcam",
        opacity: float = 0.4,
        views: Sequence[str] | None = None,
        name: str | None = None,
        neighbours: tuple[Path | str | bytes, Path | str | bytes] | None = None,
    ) -> Explanation:
        """Grad-CAM of the ensemble's stroke score, averaged over folds and (un-flipped) views.

        `neighbours`: the previous and next slice of a study, which a 2.5D bundle needs to see
        the slice as it scored it.
        """
        from ml.explain import cam

        prepared = self.prepare(source, name)
        if neighbours is not None and uses_neighbours(self.cfg.input_mode):
            before, after = (self.prepare(n) for n in neighbours)
            prepared = self.in_context([before, prepared, after])[1]
        models = self.torch_models()
        x = prepared.tensor.to(self.device)
        heatmap = cam.explain(
            models, x, method=method, views=views or self.views, layer=self.cfg.cam_layer
        )
        return Explanation(
            name=prepared.name,
            method=method,
            heatmap=heatmap,
            overlay_png=cam.overlay_png(prepared.windowed, heatmap, opacity=opacity),
            faithfulness=cam.faithfulness(models, x, heatmap),
        )

    # ---- models ----------------------------------------------------------------------------

    @property
    def runtime(self) -> dict[str, Any]:
        """What computes the numbers, for every result's provenance."""
        found = {"backend": self.backend, "precision": self.precision}
        return {**found, "backend_note": self.backend_note} if self.backend_note else found

    def load(self, *, cam: bool = True) -> Predictor:
        """Build the backend's models now rather than on first use, and torch's, which Grad-CAM
        needs whatever the backend, unless `cam` is False. A server calls it when a worker
        starts."""
        if self.backend == "onnx":
            self._onnx()
        elif self.backend == "openvino":
            self._openvino()
        if cam or self.backend == "torch":
            self.torch_models()
        return self

    def torch_models(self) -> list[torch.nn.Module]:
        """The fold models, built once (also used by Grad-CAM whatever the backend)."""
        if self._torch_models is None:
            weights = [self.bundle.fold_weights(k) for k in self.folds]
            self._torch_models = [m.to(self.device) for m in load_fold_models(weights, self.cfg)]
        return self._torch_models

    def _onnx(self) -> list[Any]:
        if self._sessions is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            # K sessions run one after another; spinning worker threads of a finished session
            # would steal the cores from the next one.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions = [
                ort.InferenceSession(
                    str(self.bundle.path / "onnx" / f"fold_{k}.onnx"),
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
                for k in self.folds
            ]
        return self._sessions

    def _openvino(self) -> list[Any]:
        if self._compiled is None:
            import openvino as ov

            core = ov.Core()
            self._compiled = [
                ov_backend.compile_fold(self.bundle, k, self.precision, core=core)
                for k in self.folds
            ]
        return self._compiled

    # ---- helpers ---------------------------------------------------------------------------

    def _summarise(
        self, prepared: Prepared, probs: np.ndarray, point: OperatingPoint, half_width: float
    ) -> SlicePrediction:
        """probs: (K, V) for one slice."""
        per_fold = _aggregate_views(probs, self.view_aggregation)  # (K,)
        probability = float(per_fold.mean())
        fold_std = float(per_fold.std())
        view_std = float(probs.mean(axis=0).std())
        threshold = point.threshold
        reasons = []
        if abs(probability - threshold) <= half_width:
            reasons.append("close to the threshold")
        if fold_std > self.uncertainty["fold_std_limit"]:
            reasons.append("the fold models disagree")
        if not prepared.check.plausible:
            reasons.append(NOT_HEAD_CT)
        return SlicePrediction(
            name=prepared.name,
            probability=probability,
            fold_probabilities=[float(p) for p in per_fold],
            fold_std=fold_std,
            view_std=view_std,
            label=LABELS[int(probability >= threshold)],
            threshold=threshold,
            operating_point=point.name,
            uncertain=bool(reasons),
            uncertain_reasons=reasons,
            bundle_id=self.bundle.id,
            info=prepared.info,
            input_warning=prepared.check.warning,
        )


def _aggregate_views(probs: np.ndarray, how: str) -> np.ndarray:
    if how == "mean":
        return probs.mean(axis=1)
    if how == "median":
        return np.median(probs, axis=1)
    return probs.max(axis=1)


def resolve_backend(bundle: Bundle, backend: str, precision: str) -> tuple[str, str, str | None]:
    """(backend, precision, note) this process runs for what was asked; the note says why it
    differs. Raises BundleError for an ONNX backend without an export, PrecisionRefused for a
    precision that failed its check."""
    note = None
    if backend == "torch":
        if precision not in ("auto", "f32"):
            note = f"the torch backend runs float32 only, not {precision}"
        return "torch", "f32", note
    if backend in ("auto", "openvino"):
        found = _openvino_choice(bundle, backend, precision)
        if isinstance(found, tuple):
            return found
        note = found
    elif precision not in ("auto", "f32"):
        note = f"the {backend} backend runs float32 only, not {precision}"
    if export_matches(bundle):
        return "onnx", "f32", note
    if backend == "onnx":
        raise BundleError(
            f"{bundle.path} has no ONNX export matching its weights; "
            f"run: python -m ml export {bundle.path}"
        )
    return "torch", "f32", note


def _openvino_choice(
    bundle: Bundle, backend: str, precision: str
) -> tuple[str, str, str | None] | str | None:
    """The OpenVINO variant to run, or why there is none (None when nothing needs saying)."""
    asked = backend == "openvino" or precision != "auto"
    if not ov_backend.installed():
        return "OpenVINO is not installed" if asked else None
    if allocator() == "tcmalloc":
        why = "OpenVINO cannot run in a process with tcmalloc preloaded (ml.runtime)"
        return why if asked else None
    manifest = ov_backend.read_manifest(bundle)
    if manifest is None or not export_matches(bundle):
        if not asked:
            return None
        return (
            "the bundle has no OpenVINO export matching its weights "
            f"(python -m ml export {bundle.path} --data DIR)"
        )
    if backend == "auto" and precision == "auto":
        try:
            choice = ov_backend.choose(bundle, "auto", manifest)
        except ov_backend.PrecisionRefused:
            return None  # no precision passed here: ONNX Runtime or torch, nothing to say
        timings = manifest.get("ms_per_slice", {})
        ours = timings.get(f"openvino/{choice.precision}", float("inf"))
        if timings.get("onnx/f32", float("inf")) < ours:
            return None  # ONNX Runtime measured faster here
        return "openvino", choice.precision, choice.note
    choice = ov_backend.choose(bundle, precision, manifest)
    return "openvino", choice.precision, choice.note
