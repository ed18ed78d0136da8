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


def test_production_refuses_to_start_without_a_real_key_and_https(tmp_path: Path) -> None:
    import pytest

    from webapp import ConfigurationError

    settings = _settings(tmp_path)
    settings.ENVIRONMENT = "production"
    with pytest.raises(ConfigurationError, match="needs SECRET_KEY"):
        create_app(settings)
    settings.SECRET_KEY = "short"
    with pytest.raises(ConfigurationError, match="at least 32"):
        create_app(settings)
    settings.SECRET_KEY = "k" * 64
    with pytest.raises(ConfigurationError, match="SESSION_COOKIE_SECURE"):
        create_app(settings)
    settings.SESSION_COOKIE_SECURE = True
    assert create_app(settings).config["SECRET_KEY"] == "k" * 64
    settings.ENVIRONMENT = "staging"
    with pytest.raises(ConfigurationError, match="choose development or production"):
        create_app(settings)


def test_trusted_proxies_give_the_client_address(tmp_path: Path) -> None:
    from flask import request

    settings = _settings(tmp_path)
    settings.SECRET_KEY = "test"
    seen = []
    for hops, expected in ((0, "127.0.0.1"), (1, "203.0.113.7")):
        settings.TRUSTED_PROXIES = hops
        app = create_app(settings)
        app.before_request(lambda: seen.append(request.remote_addr))
        app.test_client().get("/", headers={"X-Forwarded-For": "203.0.113.7"})
        assert seen[-1] == expected
