"""Secrets, cookies and headers a deployment gets without configuring anything."""

from __future__ import annotations

import stat
from pathlib import Path

from config import Config
from webapp import create_app


def test_without_secret_key_a_random_one_is_made_once_and_kept(tmp_path: Path, monkeypatch) -> None:
    from flask import Flask

    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(tmp_path / "instance"))
    first = create_app(_settings(tmp_path))
    second = create_app(_settings(tmp_path))
    key = first.config["SECRET_KEY"]
    assert len(key) == 64 and key == second.config["SECRET_KEY"]
    path = tmp_path / "instance" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "development" not in key


def _settings(tmp_path: Path):
    class Settings(Config):
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{tmp_path / 'db.sqlite3'}"
        BUNDLE_DIR = tmp_path / "no-bundles"
        SECRET_KEY = None

    return Settings


def test_cookie_flags_and_security_headers(client) -> None:
    app = client.application
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
