"""Web app configuration: environment variables with documented defaults."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent


class Config:
    """Read once at start-up. Every value can be set in the environment."""

    # Signs session cookies. The default is for development only; set SECRET_KEY in production.
    SECRET_KEY = os.environ.get("SECRET_KEY", "development-only-not-secret")
    # Any SQLAlchemy URL; SQLite in the instance folder by default.
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL", "sqlite:///ctstroke.sqlite3")
    # Folder holding model bundles, and the name of the one the app serves.
    BUNDLE_DIR = Path(os.environ.get("BUNDLE_DIR", ROOT / "bundles"))
    ACTIVE_BUNDLE = os.environ.get("ACTIVE_BUNDLE", "demo")


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret"
    SQLALCHEMY_DATABASE_URI = "sqlite://"
