"""The threshold studio: move a threshold over the OOF predictions, see what it does, keep it."""

from webapp.studio.views import bp

__all__ = ["bp"]
