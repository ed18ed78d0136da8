"""Flask app factory. Research software, not for clinical use."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from werkzeug.wrappers import Response

ROOT = Path(__file__).resolve().parent.parent

# Nothing outside this server may be reached from a page (hospital networks are often closed,
# and a page that cannot call out cannot leak either). Inline styles are allowed for the
# overlay opacity and Plotly; scripts only from /static.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'self'"
)


def create_app(config: object | None = None) -> Flask:
    """Build the app: config, extensions, the active bundle, blueprints."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.from_object(config or "config.Config")
    _check_production(app.config)  # before anything is written: a refused start leaves no trace
    _check_inference(app.config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(Path(app.instance_path) / "secret_key")
    if app.config.get("TRUSTED_PROXIES"):
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    from webapp import audit, auth, converters, errors, filters
    from webapp.bundles import caveats
    from webapp.bundles import store as bundle_store
    from webapp.extensions import csrf, db, migrate, sqlite_wait
    from webapp.predict import jobs
    from webapp.storage import storage_cli

    converters.init_app(app)  # before any route is added
    sqlite_wait(app.config)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    csrf.init_app(app)
    bundle_store.init_app(app)
    caveats.init_app(app)
    jobs.init_app(app)
    filters.init_app(app)
    errors.register(app)
    auth.init_app(app)
    app.after_request(_security_headers)
    app.cli.add_command(audit.audit_cli)
    app.cli.add_command(storage_cli)

    from webapp.api import bp as api_bp
    from webapp.api.cli import tokens_cli
    from webapp.auth.cli import users_cli
    from webapp.bundles import bp as bundles_bp
    from webapp.history import bp as history_bp
    from webapp.predict import bp as predict_bp
    from webapp.results import bp as results_bp
    from webapp.studio import bp as studio_bp

    for blueprint in (predict_bp, results_bp, history_bp, bundles_bp, studio_bp, api_bp):
        app.register_blueprint(blueprint)
    app.cli.add_command(tokens_cli)
    app.cli.add_command(users_cli)
    return app


class ConfigurationError(RuntimeError):
    """The settings cannot run this deployment safely; the message says what to set."""


def _check_production(config: dict) -> None:
    """Outside development, refuse to start without what a shared deployment needs."""
    environment = config.get("ENVIRONMENT", "development")
    if environment not in ("development", "production"):
        raise ConfigurationError(f"ENVIRONMENT={environment!r}; choose development or production")
    if environment != "production":
        return
    if len(config.get("SECRET_KEY") or "") < 32:
        raise ConfigurationError(
            "ENVIRONMENT=production needs SECRET_KEY (at least 32 random characters, the same "
            "on every web host): python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    if not config.get("SESSION_COOKIE_SECURE"):
        raise ConfigurationError(
            "ENVIRONMENT=production needs SESSION_COOKIE_SECURE=1: serve it over HTTPS"
        )


def _check_inference(config: dict) -> None:
    """Refuse to start on a backend or precision that does not exist (a typo would otherwise
    fail every prediction); whether an existing one may run is the bundle's check's to say."""
    from ml import BACKENDS, PRECISIONS

    for key, names in (("PREDICTOR_BACKEND", BACKENDS), ("PREDICTOR_PRECISION", PRECISIONS)):
        if config.get(key, "auto") not in names:
            raise ConfigurationError(f"{key}={config[key]!r}; choose one of {', '.join(names)}")


def _instance_secret(path: Path) -> str:
    """This deployment's own random key, made on first start and kept (mode 0600)."""
    import os
    import secrets

    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made earlier (make run's `flask db upgrade` makes it before any worker starts)
    else:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response
