"""The JSON API under /api/v1, for scripts and other systems; bearer tokens, not sessions."""

from webapp.api.views import bp

__all__ = ["bp"]
