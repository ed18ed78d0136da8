"""The model, loaded when a web worker starts, in a background thread: no request pays for it.

gunicorn.conf.py starts it from gunicorn's `post_worker_init` hook. A request that needs the
model before it is ready waits for it (the predictor's lock), as it would have waited to load
it itself; every other page is served at once. The backend's models load first; the torch
models Grad-CAM needs load after them, under the heat maps' lock only, so that predictions with
ONNX Runtime or OpenVINO need not wait for them.
"""

from __future__ import annotations

import threading
import time

from flask import Flask

from ml import UserError
from webapp.bundles.store import explaining, using_predictor
from webapp.errors import ModelNotLoaded


def start(app: Flask) -> threading.Thread:
    """Load the active bundle's models (the backend's and Grad-CAM's) in a daemon thread."""
    thread = threading.Thread(target=_load, args=(app,), name="load-model", daemon=True)
    thread.start()
    return thread


def _load(app: Flask) -> None:
    began = time.monotonic()
    with app.app_context():
        try:
            with using_predictor() as predictor:
                predictor.load(cam=False)
            app.logger.info("predictions ready in %.1f s", time.monotonic() - began)
            with explaining() as predictor:
                predictor.torch_models()
        except ModelNotLoaded:
            return  # create_app logged why, and every page that needs the model says so
        except UserError as error:  # a precision its check refused, say: said once, here
            app.logger.error("the model cannot predict as configured: %s", error)
            return
        app.logger.info("model loaded in %.1f s", time.monotonic() - began)
