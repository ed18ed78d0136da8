"""Web fixtures: an app on its own temporary database, migrated like production.

The database is SQLite unless a test module asks for both (`pytestmark = BOTH_DATABASES`, see
tests/web/helpers.py): then each test also runs on PostgreSQL, at TEST_DATABASE_URL
(`eval "$(.ci/postgres)"` starts a throwaway one), in a schema of its own that is dropped
afterwards. Without TEST_DATABASE_URL those runs are skipped locally and fail under CI (CI=1),
where a skipped PostgreSQL suite would hide a broken one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from config import TestConfig
from webapp import create_app
from webapp.extensions import db


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
        database = _sqlite(tmp_path)
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


def _sqlite(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'test.sqlite3'}")


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
    database = database or _sqlite(tmp_path)

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
    """An app on the tiny bundle with some settings changed, e.g. make_app(INLINE_SLICES=0)."""

    def make(**settings: object) -> Flask:
        return _make_app(tmp_path, bundle_dir, "tiny", database=database, **settings)

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
