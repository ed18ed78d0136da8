"""The active model bundle, loaded once per worker process and shared by its requests.

The Predictor (the fold models) is built on first use and kept for the life of the process.
Predictions go through `using_predictor()` and Grad-CAM through `explaining()`, each holding its
own lock. Grad-CAM hooks the torch models: when the backend is torch too, the two share those
models, so `explaining()` also takes the predictions' lock (a prediction running meanwhile would
feed the hooks). With ONNX Runtime or OpenVINO, a heat map being made holds up no prediction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import Flask, abort, current_app
from flask.cli import AppGroup

from ml import Bundle, BundleError, UserError, load_bundle
from webapp.errors import ModelNotLoaded
from webapp.extensions import db
from webapp.models import BundleRecord

if TYPE_CHECKING:  # torch loads only when a worker first predicts, not for every flask command
    from ml import Predictor

KEY = "ctstroke.bundle"
PREDICTOR_KEY = "ctstroke.predictor"
_lock = threading.RLock()  # predictions
_cam_lock = threading.RLock()  # Grad-CAM
_create_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """Load the configured bundle, or remember why it could not be loaded."""
    path = Path(app.config["BUNDLE_DIR"]) / app.config["ACTIVE_BUNDLE"]
    try:
        app.extensions[KEY] = (load_bundle(path), None)
    except BundleError as exc:
        app.logger.error("no model loaded: %s", exc)
        app.extensions[KEY] = (None, _public(exc, path))
    app.cli.add_command(bundles_cli)


def active_bundle() -> tuple[Bundle | None, str | None]:
    """(bundle, None) when loaded, (None, reason) otherwise."""
    return current_app.extensions[KEY]


@contextmanager
def using_predictor() -> Iterator[Predictor]:
    """The process's Predictor for the active bundle, held for predictions while the block runs."""
    predictor = _predictor()
    with _lock:
        yield predictor


@contextmanager
def explaining() -> Iterator[Predictor]:
    """The process's Predictor, held for Grad-CAM (and for predictions too when the backend is
    torch, whose models the heat map hooks)."""
    predictor = _predictor()
    with _cam_lock:
        if predictor.backend == "torch":
            with _lock:
                yield predictor
        else:
            yield predictor


def _predictor() -> Predictor:
    bundle, problem = active_bundle()
    if bundle is None:
        raise ModelNotLoaded(problem or "no model bundle is loaded")
    with _create_lock:
        predictor = current_app.extensions.get(PREDICTOR_KEY)
        if predictor is None:
            from ml import Predictor

            predictor = Predictor(
                bundle,
                backend=current_app.config["PREDICTOR_BACKEND"],
                precision=current_app.config["PREDICTOR_PRECISION"],
            )
            if predictor.backend_note:
                current_app.logger.warning("inference: %s", predictor.backend_note)
            current_app.logger.info("inference: %s", predictor.runtime)
            current_app.extensions[PREDICTOR_KEY] = predictor
    return predictor


def running() -> dict[str, str]:
    """What this process predicts the active bundle with: backend, precision and, when they
    differ from what was asked, why; or `error` when it cannot (a precision refused, say).

    Chooses them now if no prediction has yet: that reads the export's manifest, not a model.
    """
    try:
        return _predictor().runtime
    except ModelNotLoaded as error:
        return {"error": str(error)}
    except UserError as error:
        return {"error": _public(error, active_bundle()[0].path)}


def predicting_bundle() -> Bundle:
    """The active bundle, when this process can predict with it; else ModelNotLoaded, saying why,
    before an upload is read or stored."""
    error = running().get("error")
    if error:
        raise ModelNotLoaded(error)
    return active_bundle()[0]


def _public(error: Exception, path: Path) -> str:
    """An error about a bundle as pages and /api/v1/health show it: the bundle's name, not
    where the server keeps it."""
    return str(error).replace(str(path), f"bundle {path.name!r}")


def register(bundle: Bundle) -> bool:
    """Record the bundle in the database (once); True when it was new. The caller commits.

    A record made before what it was trained on was recorded gets it now.
    """
    record = db.session.get(BundleRecord, bundle.id)
    if record is not None:
        if record.synthetic_only is None:
            record.synthetic_only = bundle.synthetic_only
        return False
    db.session.add(record_of(bundle))
    return True


def record_of(bundle: Bundle) -> BundleRecord:
    """The database row that stands for a bundle (not added to the session)."""
    return BundleRecord(
        id=bundle.id,
        name=bundle.name,
        backbone=bundle.config["backbone"],
        synthetic_only=bundle.synthetic_only,
    )


bundles_cli = AppGroup("bundles", help="Model bundles known to this deployment.")


@bundles_cli.command("sync")
def sync_command() -> None:
    """Register every intact bundle under BUNDLE_DIR in the database."""
    bundle_dir = Path(current_app.config["BUNDLE_DIR"])
    for path in sorted(p for p in bundle_dir.glob("*") if p.is_dir()):
        try:
            bundle = load_bundle(path)
        except BundleError as exc:
            click.echo(f"skipped {path.name}: {exc}", err=True)
            continue
        if register(bundle):
            click.echo(f"registered {bundle.name} ({bundle.id})")
    db.session.commit()


def known_records() -> list[BundleRecord]:
    """The registered bundles, oldest first, and the loaded one if it is not registered yet
    (listed unsaved: a GET writes nothing)."""
    records = list(db.session.scalars(db.select(BundleRecord).order_by(BundleRecord.registered_at)))
    active, _ = active_bundle()
    if active is not None and all(r.id != active.id for r in records):
        records.append(record_of(active))
    return records


def registered_bundle(record: BundleRecord) -> Bundle | None:
    """A registered bundle's metadata (figures, card), its files checked but not its weights;
    None when its folder is gone, damaged or now holds another bundle."""
    loaded, _ = active_bundle()
    if loaded is not None and loaded.id == record.id:
        return loaded
    try:
        bundle = load_bundle(current_app.config["BUNDLE_DIR"] / record.name, metadata_only=True)
    except BundleError:
        return None
    return bundle if bundle.id == record.id else None


def get_bundle_or_404(bundle_id: str) -> Bundle:
    """The loaded bundle, or a registered one read from disk and checked against its hashes."""
    loaded, _ = active_bundle()
    if loaded is not None and loaded.id == bundle_id:
        return loaded
    record = db.get_or_404(BundleRecord, bundle_id)
    try:
        bundle = load_bundle(current_app.config["BUNDLE_DIR"] / record.name)
    except BundleError:
        abort(404)
    if bundle.id != bundle_id:  # the folder now holds another bundle under the same name
        abort(404)
    return bundle
