"""Brain-CT slice classifier (Normal vs Stroke): training, bundles and evaluation.

The names below are the public API: what the web app and the benchmarks use. Each is imported on
first use (`ml.lazy`), so `from ml import load_bundle` does not load torch. Nothing here imports
Flask. Not for clinical use.
"""

from __future__ import annotations

import os

from ml.lazy import exports

# albumentations asks PyPI for a newer release on import; hospital networks are closed
# and a blocked request must not slow down or hang start-up.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

__getattr__, __all__ = exports(
    __name__,
    {
        # bundles and their configuration
        "Bundle": "ml.bundle",
        "BundleError": "ml.bundle",
        "UserError": "ml.errors",  # every error of bad input or settings, worded for the user
        "load_bundle": "ml.bundle",
        "write_manifest": "ml.bundle",
        "TrainConfig": "ml.config",
        "make_config": "ml.config",
        "BACKENDS": "ml.config",
        "PRECISIONS": "ml.config",
        "load_config": "ml.config",
        "save_config": "ml.config",
        "parse_override": "ml.config",
        "DEFAULT_CLASS_MAP": "ml.config",
        "DEFAULT_PATIENT_REGEX": "ml.config",
        # the allocator torch runs under (tcmalloc when installed)
        "allocator": "ml.runtime",
        "find_tcmalloc": "ml.runtime",
        "OPT_OUT": "ml.runtime",
        # reading what users upload
        "read_slice": "ml.data.readers",
        "sniff_format": "ml.data.readers",
        "UnreadableImage": "ml.data.readers",
        "BRAIN_WINDOW": "ml.data.readers",
        "read_zip": "ml.data.inputs",
        "UnreadableInput": "ml.data.inputs",
        "network_pixels": "ml.data.cache",
        # is it a head CT at all? (blank images, photographs ...)
        "check_head_ct": "ml.data.headct",
        "HeadCtCheck": "ml.data.headct",
        "NOT_HEAD_CT": "ml.data.headct",
        # where a bundle's training data came from (`Bundle.synthetic_only` reads it)
        "SYNTHETIC_ORIGIN": "ml.config",
        "network_frame": "ml.data.cache",
        # lesion masks as filled areas (PHE-SICH draws outlines)
        "lesion_region": "ml.data.masks",
        # predicting and explaining (these load torch)
        "Predictor": "ml.infer.predictor",
        "SlicePrediction": "ml.infer.predictor",
        "StudyPrediction": "ml.infer.predictor",
        "order_slices": "ml.infer.prepare",
        "export_bundle": "ml.infer.onnx",
        "export_matches": "ml.infer.onnx",
        "export_openvino": "ml.infer.openvino_export",
        "PrecisionRefused": "ml.infer.openvino",
        "check_summary": "ml.infer.openvino",
        "heatmap_png": "ml.explain.cam",
        # operating points, and the out-of-fold figures the threshold studio draws
        "OperatingPoint": "ml.metrics.thresholds",
        "read_thresholds": "ml.metrics.thresholds",
        "write_thresholds": "ml.metrics.thresholds",
        "OofScores": "ml.evaluate.oof",
        "oof_scores": "ml.evaluate.oof",
        "oof_sources": "ml.evaluate.oof",
        "OneClassSource": "ml.evaluate.oof",
        "metrics_at": "ml.evaluate.oof",
        "band_half_width": "ml.evaluate.oof",
        "oof_curves": "ml.evaluate.oof:curves",
        "oof_figures": "ml.evaluate.oof:figures",
        "THRESHOLD_TAG": "ml.evaluate.figures",
        "number": "ml.evaluate.numbers",
        "percent": "ml.evaluate.numbers",
        "interval": "ml.evaluate.numbers",
        # what a model card says of its labels, heat maps and patient score, line by line
        "label_lines": "ml.evaluate.model_card",
        "percent_interval": "ml.evaluate.numbers",
        # training
        "run_training": "ml.train.pipeline",
        "write_dataset": "ml.data.synth",
    },
)
