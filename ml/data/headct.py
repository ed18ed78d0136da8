"""Does a decoded slice look like an axial head CT at all? A guard against clearly wrong inputs.

The network gives every image a probability, a black square and a holiday photograph included.
This check looks at the decoded slice (the first window's grey levels, as the model gets them)
and names what is plainly wrong, so that such a result carries a warning instead of a confident
label. It is deliberately loose: it must never fire on a real head-CT slice, so it only catches
images that lack what every one of them has.

- **Blank**: fewer than 1 in 1,000 pixels differ from the image's median grey level by more than
  `AIR_LEVEL`. An axial slice through a head has a head in it; a blank (black, white or grey) image
  or one with a few specks has not.
- **No air around it**: fewer than half of the pixels along the image's edges are dark. Around a
  head lies air, black in every CT window a reader uses; photographs, gradients, noise and
  drawings have bright or mid-grey edges.

The thresholds were set from measurements (benchmarks/bench_head_check.py, figures in
benchmarks/RESULTS.md): real CT slices showed at least 82% dark edge pixels, and at least 0.13%
of pixels off the median wherever anything was in the slice; noise, gradients and photographs at
most 29% dark edge pixels. PHE-SICH holds 29 slices past the top of the head that are black or
hold a few specks (at most 0.06% of pixels): the check calls them blank, rightly, since there is
no head in them. What it does
not catch: an object photographed on a black background, or a CT of another part of the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

WORK_SIDE = 256  # measured on a copy at most this large: the 8000 px image costs no more
AIR_LEVEL = 20  # grey levels: air is 0 in a brain window; JPEG noise stays below this
BLANK_SHARE = 0.001  # of pixels off the median grey level: below it, the image is blank
DARK_EDGE_SHARE = 0.5  # of edge pixels at air level: below it, no air surrounds the content
EDGE_WIDTH = 0.02  # of the longer side, each edge

NOT_HEAD_CT = "the image does not look like an axial head CT"


@dataclass(frozen=True)
class HeadCtCheck:
    """The verdict, why (None when it looks like a head CT), and the measured shares."""

    plausible: bool
    problem: str | None = None
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def warning(self) -> str | None:
        """One sentence for a result page or an API answer; None when nothing is wrong."""
        if self.plausible:
            return None
        return f"{NOT_HEAD_CT}: {self.problem}. Its score means nothing."


def check_head_ct(pixels: np.ndarray) -> HeadCtCheck:
    """Check decoded pixels, uint8 (H, W) or (H, W, C); only the first channel is read."""
    grey = _small(np.asarray(pixels)[..., 0] if np.ndim(pixels) == 3 else np.asarray(pixels))
    content = float((np.abs(grey.astype(np.int16) - np.median(grey)) > AIR_LEVEL).mean())
    dark_edges = float((_edges(grey) <= AIR_LEVEL).mean())
    measures = {"content_share": round(content, 6), "dark_edge_share": round(dark_edges, 6)}
    if content < BLANK_SHARE:
        problem = (
            "it is blank (almost every pixel has the same grey level), so there is no head in it"
        )
        return HeadCtCheck(False, problem, measures)
    if dark_edges < DARK_EDGE_SHARE:
        problem = (
            f"only {dark_edges:.0%} of its edge pixels are dark, where a head CT has air (black) "
            "around the head; it looks like a photograph or another kind of image"
        )
        return HeadCtCheck(False, problem, measures)
    return HeadCtCheck(True, None, measures)


def _small(grey: np.ndarray) -> np.ndarray:
    """The image shrunk (area averaging) so that its longer side is at most WORK_SIDE."""
    height, width = grey.shape
    scale = WORK_SIDE / max(height, width)
    if scale >= 1:
        return grey
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _edges(grey: np.ndarray) -> np.ndarray:
    """The pixels of a band along each of the four edges."""
    band = max(1, round(EDGE_WIDTH * max(grey.shape)))
    return np.concatenate(
        [
            grey[:band].ravel(),
            grey[-band:].ravel(),
            grey[band:-band, :band].ravel(),
            grey[band:-band, -band:].ravel(),
        ]
    )
