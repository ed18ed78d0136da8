"""Web fixtures: an app on its own temporary database (tests/conftest.py), migrated like
production."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade

from config import TestConfig
from tests.conftest import Database, sqlite_database
from webapp import create_app


@pytest.fixture
def bundle_dir(tiny_bundle: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "bundles"
    shutil.copytree(tiny_bundle, folder / "tiny")
    return folder


def _make_app(
    tmp_path: Path,
    bundle_dir: Path,
    active: str,
    *,
    database: Database | None = None,
    **settings: object,
) -> Flask:
    """An app on `database` (a SQLite file in tmp_path unless given), migrated like production."""
    database = database or sqlite_database(tmp_path)

    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = database.url
        BUNDLE_DIR = bundle_dir
        ACTIVE_BUNDLE = active
        UPLOAD_DIR = str(tmp_path / "uploads")
        CACHE_DIR = str(tmp_path / "cache")

    for key, value in settings.items():
        setattr(Config, key, value)

    app = create_app(Config)
    database.apps.append(app)
    with app.app_context():
        upgrade()
    return app


@pytest.fixture
def app(tmp_path: Path, database: Database, bundle_dir: Path) -> Iterator[Flask]:
    yield _make_app(tmp_path, bundle_dir, "tiny", database=database)


@pytest.fixture
def make_app(tmp_path: Path, database: Database, bundle_dir: Path):
    """An app on the tiny bundle (or another under bundle_dir, `active=`) with some settings
    changed, e.g. make_app(INLINE_SLICES=0)."""

    def make(active: str = "tiny", **settings: object) -> Flask:
        return _make_app(tmp_path, bundle_dir, active, database=database, **settings)

    return make


@pytest.fixture
def app_without_bundle(tmp_path: Path, database: Database) -> Flask:
    return _make_app(tmp_path, tmp_path / "no-bundles", "missing", database=database)


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()
