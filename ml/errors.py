"""The base of every error a user can act on: the CLI prints its message, not a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Raised for bad data, bad bundles, missing weights or leaking splits."""
