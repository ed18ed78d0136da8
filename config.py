"""Web app configuration: environment variables with documented defaults."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent


class Config:
    """Read once at start-up. Every value can be set in the environment."""

    # Signs session cookies and CSRF tokens. Without SECRET_KEY in the environment, a random key
    # is made once and kept in the instance folder (instance/secret_key, readable by the owner
    # only), so no deployment ever runs with a key that is written down anywhere.
    SECRET_KEY = os.environ.get("SECRET_KEY") or None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    # Set SESSION_COOKIE_SECURE=1 behind HTTPS, so the cookie never travels in clear text.
    SESSION_COOKIE_SECURE = os.environ.get("SESSION_COOKIE_SECURE", "0") in ("1", "true", "yes")
    # Any SQLAlchemy URL; SQLite in the instance folder by default.
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL", "sqlite:///ctstroke.sqlite3")
    # Folder holding model bundles, and the name of the one the app serves.
    BUNDLE_DIR = Path(os.environ.get("BUNDLE_DIR", ROOT / "bundles"))
    ACTIVE_BUNDLE = os.environ.get("ACTIVE_BUNDLE", "demo")
    # "auto" uses the bundle's ONNX export when it has one, else torch.
    PREDICTOR_BACKEND = os.environ.get("PREDICTOR_BACKEND", "auto")

    # Uploads: stored under the instance folder unless UPLOAD_DIR is set.
    UPLOAD_DIR = os.environ.get("UPLOAD_DIR") or None
    # A request larger than this is refused with 413 before it is read.
    MAX_CONTENT_LENGTH = int(float(os.environ.get("MAX_UPLOAD_MB", "50")) * 1024 * 1024)
    # Larger images are refused before they are decoded (decompression bombs).
    MAX_IMAGE_PIXELS = int(os.environ.get("MAX_IMAGE_PIXELS", str(8192 * 8192)))
    MAX_STUDY_SLICES = int(os.environ.get("MAX_STUDY_SLICES", "500"))
    # Patient-identifying DICOM tags are removed before storage (webapp/deid.py lists them).
    DEIDENTIFY_DICOM = os.environ.get("DEIDENTIFY_DICOM", "1") not in ("0", "false", "no")
    # Uploads of at most this many slices are predicted within the request; larger ones run in
    # a background thread while the page shows progress.
    INLINE_SLICES = int(os.environ.get("INLINE_SLICES", "1"))
    HISTORY_PAGE_SIZE = 25
    # Computed once and kept (the studio's bootstrap bands); under the instance folder by default.
    CACHE_DIR = os.environ.get("CACHE_DIR") or None


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret"
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    PREDICTOR_BACKEND = "torch"
    UPLOAD_DIR = None  # each test app has its own instance folder (see tests/web/conftest.py)
