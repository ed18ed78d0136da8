"""Model pages: the active bundle's card and the bundles this deployment knows."""

from webapp.bundles.views import bp

__all__ = ["bp"]
