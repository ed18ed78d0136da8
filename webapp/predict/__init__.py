"""Upload slices or a study, and follow the job that predicts them."""

from webapp.predict.views import bp

__all__ = ["bp"]
