"""The active model bundle, loaded once per worker process and shared by its requests."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from ml.bundle import Bundle, BundleError, load_bundle

KEY = "ctstroke.bundle"


def init_app(app: Flask) -> None:
    """Load the configured bundle, or remember why it could not be loaded."""
    path = Path(app.config["BUNDLE_DIR"]) / app.config["ACTIVE_BUNDLE"]
    try:
        app.extensions[KEY] = (load_bundle(path), None)
    except BundleError as exc:
        app.extensions[KEY] = (None, str(exc))
    app.cli.add_command(bundles_cli)


def active_bundle() -> tuple[Bundle | None, str | None]:
    """(bundle, None) when loaded, (None, reason) otherwise."""
    return current_app.extensions[KEY]


bundles_cli = AppGroup("bundles", help="Model bundles known to this deployment.")


@bundles_cli.command("sync")
def sync_command() -> None:
    """Register every intact bundle under BUNDLE_DIR in the database."""
    from webapp.extensions import db
    from webapp.models import BundleRecord

    bundle_dir = Path(current_app.config["BUNDLE_DIR"])
    for path in sorted(p for p in bundle_dir.glob("*") if p.is_dir()):
        try:
            bundle = load_bundle(path)
        except BundleError as exc:
            click.echo(f"skipped {path.name}: {exc}", err=True)
            continue
        if db.session.get(BundleRecord, bundle.id) is None:
            db.session.add(
                BundleRecord(id=bundle.id, name=bundle.name, backbone=bundle.config["backbone"])
            )
            click.echo(f"registered {bundle.name} ({bundle.id})")
    db.session.commit()
