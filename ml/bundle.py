"""A model bundle: one folder that fully describes one trained ensemble.

    config.yaml        resolved TrainConfig
    fold_1..K.safetensors   weights of each fold's kept checkpoint (metadata: epoch, metric)
    oof.csv            path, patient_id, fold, label, probability (out-of-fold)
    holdout.csv        the same for held-out patients (ensemble mean), when a holdout was drawn
    metrics.json       OOF slice- and patient-level figures, fold spread, operating point
    split.json         patients of each fold (and of the holdout)
    audit.json         the leakage audit
    report.md          the run report in plain words
    logs/fold_K.jsonl  per-epoch training log of each fold
    manifest.json      sha256 of every file above, package versions, data summary

The bundle id is a hash of the file hashes: two bundles with the same id hold the same bytes.
Loading verifies every hash, so a bundle that was edited or damaged is refused. This module
reads metadata only and does not import torch, so the web app can show a model card cheaply.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ml.config import SYNTHETIC_ORIGIN, TrainConfig, config_from_dict
from ml.errors import UserError
from ml.hashing import sha256_file, sha256_lines

MANIFEST = "manifest.json"
FORMAT = 2  # bump when a bundle gains or changes a file that readers rely on
# exports made later from the weights; each is checked by its own manifest
DERIVED = ("onnx/", "openvino/")
PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "albumentations",
    "opencv-python-headless",
    "pillow",
    "pydicom",
    "scikit-learn",
    "safetensors",
)


class BundleError(UserError):
    """The folder is not a complete, intact bundle; the message says what is wrong."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    id: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    audit: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def folds(self) -> int:
        return int(self.config["folds"])

    def fold_weights(self, fold: int) -> Path:
        return self.path / f"fold_{fold}.safetensors"

    def all_fold_weights(self) -> list[Path]:
        return [self.fold_weights(k) for k in range(1, self.folds + 1)]

    def train_config(self) -> TrainConfig:
        """The config it was trained with; `study_aggregation: auto` resolved to the rule the
        run chose on its out-of-fold predictions (patient_thresholds.json); `cam_layer` last for
        bundles made before it was a setting."""
        cfg = config_from_dict(self.config)
        if "cam_layer" not in self.config:  # made before the choice: its CAM figures are the last
            cfg = dataclasses.replace(cfg, cam_layer="last")  # stage's, so it keeps drawing that
        if cfg.study_aggregation != "auto":
            return cfg
        chosen = self.patient_thresholds().get("aggregation")
        if chosen in (None, "auto"):
            raise BundleError(f"{self.path} says study_aggregation auto but records no choice")
        return dataclasses.replace(cfg, study_aggregation=chosen)

    def patient_thresholds(self) -> dict[str, Any]:
        path = self.path / "patient_thresholds.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def synthetic_only(self) -> bool:
        """Trained on synthetic phantoms only, so it knows nothing about real CT.

        The trainer records the data's origin (`origin.json` of the data folder, which `ml
        synth` writes) in the manifest. Bundles trained before it did carry no origin; for them
        a note that says "synthetic phantom" (what `make demo-build` passes) decides.
        """
        origin = self.manifest.get("data", {}).get("origin")
        if origin is not None:
            return origin == SYNTHETIC_ORIGIN
        return any("synthetic phantom" in str(n).lower() for n in self.manifest.get("notes", []))

    def point_figures(self) -> dict[str, dict[str, Any]]:
        """Per level, the OOF figures at each of the bundle's operating points with their 95%
        Wilson intervals (`ci95`), as the training run's report holds them; {} without one."""
        path = self.path / "report" / "metrics.json"
        if not path.is_file():
            return {}
        report = json.loads(path.read_text())
        return {
            level: report[level].get("operating_points", {})
            for level in ("slice", "patient")
            if isinstance(report.get(level), dict)
        }

    def card(self) -> dict[str, Any]:
        """What a model card shows: identity, recipe, data, honest figures and their caveats."""
        cfg, data = self.config, self.manifest.get("data", {})
        return {
            "id": self.id,
            "name": self.name,
            "created": self.manifest.get("created"),
            "backbone": cfg["backbone"],
            "weights_source": self.manifest.get("weights_source"),
            "image_size": cfg["image_size"],
            "windows": cfg["windows"],
            "folds": cfg["folds"],
            "epochs": cfg["epochs"],
            "loss": cfg["loss"],
            "study_aggregation": self.train_config().study_aggregation,
            "data": data,
            "synthetic_only": self.synthetic_only,
            "metrics": self.metrics,
            "audit_ok": bool(self.audit.get("ok")),
            "notes": self.manifest.get("notes", []),
            "inference": self.inference_checks(),
        }

    def weight_hashes(self) -> dict[str, str]:
        """Each fold's weight file and its sha256: what a derived export records."""
        names = [f"fold_{k}.safetensors" for k in range(1, self.folds + 1)]
        return {name: self.manifest["files"][name] for name in names}

    def export_manifest(self, folder: str) -> dict | None:
        """The manifest of a derived export (onnx/, openvino/) when it was made from these
        weights; its own files are checked by its backend."""
        path = self.path / folder / "manifest.json"
        if not path.is_file():
            return None
        manifest = json.loads(path.read_text())
        return manifest if manifest.get("weights") == self.weight_hashes() else None

    def inference_checks(self) -> dict | None:
        """The OpenVINO variants' accuracy checks and speeds (ml export), for the model card."""
        found = self.export_manifest("openvino")
        if found is None:
            return None
        keys = (
            "checks",
            "limits",
            "tie_margin",
            "threshold",
            "checked_on",
            "ms_per_slice",
            "machine",
        )
        return {key: found.get(key) for key in keys} | {"openvino": found.get("openvino")}


def bundle_id(files: dict[str, str]) -> str:
    return sha256_lines([f"{name}:{digest}" for name, digest in sorted(files.items())])[:16]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_manifest(path: Path, **extra: Any) -> str:
    """Hash every file in the bundle, write manifest.json last, return the bundle id."""
    path = Path(path)
    files = {}
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path).as_posix()
        hidden = file.name.startswith(".") or file.name == MANIFEST
        if file.is_file() and not hidden and not rel.startswith(DERIVED):
            files[rel] = sha256_file(file)
    identity = bundle_id(files)
    manifest = {
        "bundle_id": identity,
        "format": FORMAT,
        "files": files,
        "packages": package_versions(),
        **extra,
    }
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path / MANIFEST)
    return identity


METADATA = ("config.yaml", "metrics.json", "audit.json")  # what `load_bundle` reads


def load_bundle(path: Path | str, *, verify: bool = True, metadata_only: bool = False) -> Bundle:
    """Read a bundle's metadata; with `verify`, refuse it unless every file matches its hash.

    `metadata_only`: check only the files read here (not the weights), for a page that lists
    many bundles' figures without hashing every one's weights. Every way a bundle can be
    unusable (missing, unreadable, damaged) is a BundleError whose message says what to do.
    """
    path = Path(path)
    try:
        return _load(path, verify, metadata_only)
    except PermissionError as exc:
        raise BundleError(
            f"{path}: cannot read {Path(exc.filename or path).name} (permission denied); "
            "give the server's user read access to the bundle folder"
        ) from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except BundleError:
        raise
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        damage = f"{type(exc).__name__}: {exc}"
        raise BundleError(f"{path}: a bundle file is damaged ({damage})") from None


def _load(path: Path, verify: bool, metadata_only: bool) -> Bundle:
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"no bundle at {path}")
    if not manifest_path.is_file():
        raise BundleError(
            f"{path} has no {MANIFEST}: the training run did not finish; rerun it with --resume"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format", 1) != FORMAT:
        raise BundleError(
            f"{path} was written by another version of this software (bundle format "
            f"{manifest.get('format', 1)}, this version reads {FORMAT}); train it again"
        )
    files: dict[str, str] = manifest["files"]
    if verify:
        _verify(path, {k: v for k, v in files.items() if k in METADATA} if metadata_only else files)
    if bundle_id(files) != manifest.get("bundle_id"):
        raise BundleError(f"{path}: the manifest's bundle id does not match its file list")
    return Bundle(
        path=path,
        id=manifest["bundle_id"],
        config=yaml.safe_load((path / "config.yaml").read_text()),
        metrics=json.loads((path / "metrics.json").read_text()),
        manifest=manifest,
        audit=json.loads((path / "audit.json").read_text()),
    )


def _verify(path: Path, files: dict[str, str]) -> None:
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: missing file(s) {', '.join(missing)}")
    changed = [name for name, digest in files.items() if sha256_file(path / name) != digest]
    if changed:
        raise BundleError(
            f"{path}: file(s) {', '.join(changed)} do not match the manifest's hashes; "
            "the bundle was modified or damaged after training"
        )


def read_rows(path: Path) -> list[dict[str, str]] | None:
    """The rows of one of a bundle's CSV tables (oof.csv, holdout.csv); None when it is absent."""
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
