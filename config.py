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
    # ENVIRONMENT=production: the app refuses to start without a SECRET_KEY of at least 32
    # characters (several web hosts must share one key; a made-up key would differ per host)
    # and without SESSION_COOKIE_SECURE=1 (production is served over HTTPS).
    ENVIRONMENT = os.environ.get("ENVIRONMENT", "development")
    # Behind a reverse proxy: how many proxies to trust for X-Forwarded-For/-Proto/-Host, so
    # that the login rate limit and the audit log see the client's address, not the proxy's.
    TRUSTED_PROXIES = int(os.environ.get("TRUSTED_PROXIES", "0"))
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    # Set SESSION_COOKIE_SECURE=1 behind HTTPS, so the cookie never travels in clear text.
    SESSION_COOKIE_SECURE = os.environ.get("SESSION_COOKIE_SECURE", "0") in ("1", "true", "yes")
    # AUTH_REQUIRED=1: every browser page needs a logged-in user (make them with
    # `flask users create`), and roles decide who may upload, annotate, delete or change
    # operating points (webapp/auth/users.py). Off by default, so one person on one machine
    # needs no account; turn it on wherever more than one person reaches the server. The JSON
    # API keeps its bearer tokens either way.
    AUTH_REQUIRED = os.environ.get("AUTH_REQUIRED", "0") in ("1", "true", "yes")
    # Failed logins per user name and address within the window before logins from there stop.
    LOGIN_MAX_FAILURES = int(os.environ.get("LOGIN_MAX_FAILURES", "5"))
    LOGIN_WINDOW_MINUTES = int(os.environ.get("LOGIN_WINDOW_MINUTES", "15"))
    # Any SQLAlchemy URL; SQLite in the instance folder by default.
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL", "sqlite:///ctstroke.sqlite3")
    # SQLite: how long a request waits for another writer's lock before it gives up with 503.
    DATABASE_BUSY_TIMEOUT_S = float(os.environ.get("DATABASE_BUSY_TIMEOUT_S", "15"))
    # Folder holding model bundles, and the name of the one the app serves.
    BUNDLE_DIR = Path(os.environ.get("BUNDLE_DIR", ROOT / "bundles"))
    ACTIVE_BUNDLE = os.environ.get("ACTIVE_BUNDLE", "demo")
    # "auto": the fastest of the bundle's checked exports (OpenVINO, ONNX Runtime), else torch.
    PREDICTOR_BACKEND = os.environ.get("PREDICTOR_BACKEND", "auto")
    # OpenVINO precision: auto (the fastest that passed its check on the bundle's out-of-fold
    # slices), f32, bf16, mixed or int8. A name that does not exist stops the app at start; one
    # that failed its check leaves it unable to predict, and health, card and upload page say so.
    PREDICTOR_PRECISION = os.environ.get("PREDICTOR_PRECISION", "auto")

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
    # Where those larger uploads run. "thread": in a thread of the web process that took them
    # (one machine, nothing else to run). "rq": on a Redis queue, predicted by separate
    # `flask --app wsgi worker` processes, so web workers stay free. A worker must see the web
    # app's settings (DATABASE_URL, UPLOAD_DIR, BUNDLE_DIR, ACTIVE_BUNDLE) and its files.
    JOB_QUEUE = os.environ.get("JOB_QUEUE", "thread")
    # The Redis server of JOB_QUEUE=rq. Down when an upload arrives: 503, nothing stored.
    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    # A queued job still running after this many seconds is stopped and marked failed.
    JOB_TIMEOUT = int(os.environ.get("JOB_TIMEOUT", "3600"))
    # How long Redis keeps a finished job's entry; the results themselves are in the database.
    JOB_RESULT_TTL = int(os.environ.get("JOB_RESULT_TTL", "86400"))
    # `flask jobs reap` (and each `flask worker` at start) fails jobs left queued or running
    # with no progress for this many minutes, and deletes their files. A running job shows
    # progress after every slice; keep this above the longest a job may wait for its turn in a
    # busy thread queue (jobs waiting on the Redis queue are never reaped).
    STALE_JOB_MINUTES = int(os.environ.get("STALE_JOB_MINUTES", "60"))
    HISTORY_PAGE_SIZE = 25
    # Computed once and kept (the studio's bootstrap bands); under the instance folder by default.
    CACHE_DIR = os.environ.get("CACHE_DIR") or None


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret"
    AUTH_REQUIRED = False  # tests that need logins turn it on themselves
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    PREDICTOR_BACKEND = "torch"
    UPLOAD_DIR = None  # each test app has its own instance folder (see tests/web/conftest.py)
