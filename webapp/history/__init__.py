"""Every stored result: a filtered, sorted, paged list and its CSV export."""

from webapp.history.views import bp

__all__ = ["bp"]
