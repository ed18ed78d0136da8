"""Flask app factory. Research software, not for clinical use."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def create_app(config: object | None = None) -> Flask:
    """Build the app: config, extensions, the active bundle, blueprints."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.from_object(config or "config.Config")
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    from webapp.extensions import csrf, db, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    csrf.init_app(app)

    from webapp import bundle_store

    bundle_store.init_app(app)

    from webapp.bundles import bp as bundles_bp

    app.register_blueprint(bundles_bp)
    return app
