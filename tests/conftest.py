"""Shared fixtures: a synthetic phantom data set and one tiny trained bundle per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests must never reach a model hub, nor depend on a developer's filled hub cache. Set before
# anything imports huggingface_hub, which reads these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-empty-")

from ml.config import make_config
from ml.pipeline import run_training
from ml.synth import write_dataset


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["HF_HOME"], ignore_errors=True)  # the empty hub made above


TINY_PATIENTS = 12
TINY_SLICES = 4


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantom patients (6 with a lesion), 4 slices each, as 64 px PNG in class folders."""
    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_dataset(root, patients=TINY_PATIENTS, slices_per_patient=TINY_SLICES, size=64, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-fold bundle of the `test` preset, trained once for the whole session."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    cache = tmp_path_factory.mktemp("cache")
    cfg = make_config("test")
    run_training(phantom_data, out, cfg, cache_dir=cache, progress=False)
    return out


@pytest.fixture(scope="session")
def neighbour_bundle(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5D bundle of the `test` preset with a patient holdout, cropped to the head with the
    neighbours aligned (`neighbours_aligned`): the mode whose preprocessing has the most parts."""
    out = tmp_path_factory.mktemp("bundles") / "neighbours"
    cfg = make_config("test", input_mode="neighbours_aligned", crop_head=True, holdout_frac=0.25)
    run_training(phantom_data, out, cfg, cache_dir=tmp_path_factory.mktemp("c"), progress=False)
    return out
