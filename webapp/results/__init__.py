"""One stored result: the slice as the model saw it, its numbers, Grad-CAM, notes and review."""

from webapp.results.views import bp

__all__ = ["bp"]
