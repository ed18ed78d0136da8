"""What the result viewer shows, read from the query string, and the links that keep it.

The slice, window, overlay (on or off), its opacity and the heat-map method travel in every
link of the viewer, so a click on another slice or window keeps the rest as the reader left it,
with or without JavaScript (static/app.js rewrites the links when the opacity slider or the
overlay toggle change in place). A study opens on its highest-scoring slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from flask import url_for
from werkzeug.datastructures import MultiDict

from webapp.models import Prediction
from webapp.results import explain, images

DEFAULT_OPACITY = 0.4
DEFAULT_METHOD = "gradcam"
# How long the page waits for its heat map, in all: gunicorn's timeout (180 s, gunicorn.conf.py),
# which ends a request that computes longer, and a little more. Past it the page says so and
# offers a retry instead of waiting for ever.
CAM_LIMIT_S = 190
POLL_S = 2  # between two questions of a page whose heat map another request is making


@dataclass(frozen=True)
class ViewerState:
    prediction_id: int
    position: int
    chosen: bool  # False when the page picked the slice (a study's highest-scoring one)
    window: str
    cam: bool
    opacity: float
    method: str

    def url(self, **changes: Any) -> str:
        """The result page showing this view with `changes` (position, window, cam, opacity,
        method)."""
        state = replace(self, **changes)
        return url_for("results.detail", prediction_id=state.prediction_id, **state.query())

    def query(self) -> dict[str, Any]:
        """The query string of this view; values at their defaults are left out, the slice
        never is."""
        args: dict[str, Any] = {"slice": self.position}
        if self.window != "model":
            args["window"] = self.window
        if not self.cam:
            args["cam"] = "off"
        if self.opacity != DEFAULT_OPACITY:
            args["opacity"] = f"{self.opacity:g}"
        if self.method != DEFAULT_METHOD:
            args["method"] = self.method
        return args


def viewer_state(prediction: Prediction, args: MultiDict[str, str]) -> ViewerState:
    """The viewer asked for by `args`; unknown values fall back to the defaults."""
    position = args.get("slice", type=int)
    chosen = position is not None
    if position is None:
        position = highest_scoring(prediction)
    window = args.get("window", "model")
    if 0 <= position < len(prediction.slices):
        window = window if window in images.windows_for(prediction.slices[position]) else "model"
    method = args.get("method", DEFAULT_METHOD)
    return ViewerState(
        prediction_id=prediction.id,
        position=position,
        chosen=chosen,
        window=window,
        cam=args.get("cam", "on") != "off",
        opacity=_opacity(args.get("opacity", DEFAULT_OPACITY, type=float)),
        method=method if method in explain.METHODS else DEFAULT_METHOD,
    )


def highest_scoring(prediction: Prediction) -> int:
    """The position of the slice with the highest probability (the first of equals)."""
    slices = prediction.slices  # in slice order
    return max(range(len(slices)), key=lambda i: slices[i].probability) if slices else 0


def _opacity(value: float | None) -> float:
    if value is None or not math.isfinite(value):
        return DEFAULT_OPACITY
    return round(min(max(value, 0.0), 1.0), 2)
