"""Users, roles and the login of the browser pages, all switched on by AUTH_REQUIRED.

The role matrix is in webapp/auth/users.py. With AUTH_REQUIRED off (the default) nothing here
runs but the template helpers, which then allow everything, and the `flask users` commands, so
users can be made before the setting is turned on.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from webapp.auth.guard import can, current_user


def init_app(app: Flask) -> None:
    """Template helpers always; the login pages and the check before each request when on."""
    app.context_processor(_template_helpers)
    if app.config["AUTH_REQUIRED"]:
        from webapp.auth.guard import guard
        from webapp.auth.views import bp

        app.register_blueprint(bp)
        app.before_request(guard)


def _template_helpers() -> dict[str, Any]:
    """`can("upload")` hides what the role may not use; `current_user` names who is logged in."""
    return {"can": can, "current_user": current_user()}


__all__ = ["can", "current_user", "init_app"]
