"""Shared fixtures: a synthetic phantom data set and one tiny trained bundle per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

# Tests must never reach a model hub, nor depend on a developer's filled hub cache. Set before
# anything imports huggingface_hub, which reads these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-empty-")

from ml.config import make_config
from ml.data.sources import Source
from ml.data.synth import write_dataset
from ml.data.synth_labels import write_lesion_manifest, write_slice_labels
from ml.train.pipeline import run_training
from webapp.extensions import db


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
def exported_bundle(tiny_bundle: Path, phantom_data: Path, tmp_path_factory) -> Path:
    """A copy of the tiny bundle with its ONNX export and its OpenVINO variants, each checked
    on the bundle's out-of-fold slices (`ml export --data`). Tests copy it before changing it."""
    from ml.infer.onnx import export_bundle
    from ml.infer.openvino_export import export_openvino

    copy = tmp_path_factory.mktemp("exported") / "tiny"
    shutil.copytree(tiny_bundle, copy)
    export_bundle(copy, data=phantom_data, check_slices=4)
    export_openvino(copy, [phantom_data])
    return copy


@pytest.fixture(scope="session")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A phantom folder with slice labels (as CT-ICH) and a site whose every patient has a
    lesion, with masks and a `label` per slice (as PHE-SICH)."""
    root = tmp_path_factory.mktemp("sources")
    write_dataset(
        root / "folder", patients=TINY_PATIENTS, slices_per_patient=TINY_SLICES, size=64, seed=2
    )
    return {
        "folder": root / "folder",
        "labels": write_slice_labels(root / "folder"),
        "site": write_lesion_manifest(root / "site", patients=6, slices_per_patient=TINY_SLICES),
    }


@pytest.fixture(scope="session")
def slice_label_bundle(
    two_sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A bundle of the `test` preset trained on both sources with slice labels, the patient
    score's rule chosen on OOF (`study_aggregation: auto`)."""
    out = tmp_path_factory.mktemp("bundles") / "slice-labels"
    sources = [
        Source("folder", two_sources["folder"], two_sources["labels"]),
        Source("site", two_sources["site"]),
    ]
    cfg = make_config("test", study_aggregation="auto")
    run_training(sources, out, cfg, cache_dir=tmp_path_factory.mktemp("c"), progress=False)
    return out


@pytest.fixture(scope="session")
def neighbour_bundle(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5D bundle of the `test` preset with a patient holdout, cropped to the head with the
    neighbours aligned (`neighbours_aligned`): the mode whose preprocessing has the most parts."""
    out = tmp_path_factory.mktemp("bundles") / "neighbours"
    cfg = make_config("test", input_mode="neighbours_aligned", crop_head=True, holdout_frac=0.25)
    run_training(phantom_data, out, cfg, cache_dir=tmp_path_factory.mktemp("c"), progress=False)
    return out


# --- databases ----------------------------------------------------------------------------------
# SQLite unless a test asks for both (`pytestmark = BOTH_DATABASES`, tests/web/helpers.py): then
# it also runs on PostgreSQL, at TEST_DATABASE_URL (`eval "$(.ci/postgres)"` starts a throwaway
# one), in a schema of its own that is dropped afterwards. Without TEST_DATABASE_URL those runs
# are skipped locally and fail under CI (CI=1), where a skipped PostgreSQL suite would hide a
# broken one.


@dataclass
class Database:
    """One test's empty database, and the apps made on it (their connections close at the end)."""

    url: str
    apps: list[Flask] = field(default_factory=list)

    def close(self) -> None:
        for app in self.apps:
            with app.app_context():
                for engine in db.engines.values():
                    engine.dispose()


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh database: SQLite by default, PostgreSQL for the parameter "postgresql"."""
    if getattr(request, "param", "sqlite") == "sqlite":
        database = sqlite_database(tmp_path)
        yield database
        database.close()
        return
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        reason = 'TEST_DATABASE_URL is not set (eval "$(.ci/postgres)" starts a PostgreSQL)'
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the PostgreSQL tests must run")
        pytest.skip(reason)
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(server)
    options = f"{url.query.get('options', '')} -csearch_path={schema}".strip()
    url = url.update_query_dict({"options": options})  # the schema is all the app sees
    database = Database(url.render_as_string(hide_password=False))
    try:
        yield database
    finally:
        database.close()
        with admin.begin() as connection:
            # A job thread still at work would hold its locks: fail after a while, never hang.
            connection.execute(text("SET LOCAL lock_timeout = '30s'"))
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def sqlite_database(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'test.sqlite3'}")
