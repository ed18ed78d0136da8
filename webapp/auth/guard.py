"""The check before every browser request when AUTH_REQUIRED is on: who is asking, and may they?

Without a logged-in user a page redirects to the login form (an htmx request gets 401 with
`HX-Redirect`, since htmx would otherwise swap the login page into a fragment). A view marked
`@permission(...)` runs only for a role that holds it; any other POST is refused unless it is
marked, so a new form cannot be left open by forgetting the mark. /api/ keeps its tokens and
/static stays open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from webapp.auth import users
from webapp.errors import error_response
from webapp.extensions import db
from webapp.models import User

View = TypeVar("View", bound=Callable[..., ResponseReturnValue])
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
OPEN_ENDPOINTS = ("static", "auth.login", "auth.logout")


def permission(name: str) -> Callable[[View], View]:
    """Mark a view as needing `name` (users.PERMISSIONS); put it below the route decorator."""
    if name not in users.PERMISSIONS:
        raise ValueError(f"unknown permission {name!r}; one of {', '.join(users.PERMISSIONS)}")

    def mark(view: View) -> View:
        view.permission = name  # type: ignore[attr-defined]
        return view

    return mark


def current_user() -> User | None:
    """The logged-in user of this request (None when AUTH_REQUIRED is off)."""
    return g.get("user")


def can(name: str) -> bool:
    """Whether this request's user may do `name`; always, when AUTH_REQUIRED is off."""
    if not current_app.config["AUTH_REQUIRED"]:
        return True
    user = current_user()
    return user is not None and users.allows(user.role, name)


def safe_next(target: str | None) -> str | None:
    """`target` when it is a path on this server, else None (no redirect off-site).

    Browsers read a backslash as a slash, so "/\\evil.example" would leave the site too.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if any(c in target for c in "\\\r\n\t") or any(ord(c) < 32 for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def guard() -> ResponseReturnValue | None:
    """Run before each request: load the user, send strangers to login, refuse what the role
    may not do (403, before the view touches anything)."""
    if request.path.startswith("/api/") or request.endpoint == "static":
        return None
    user = _load_user()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if user is None:
        return _to_login()
    if request.routing_exception is not None:
        return None  # 404 or 405 for a logged-in user, as usual
    view = current_app.view_functions.get(request.endpoint or "")
    needed = getattr(view, "permission", None)
    if needed is None and request.method in SAFE_METHODS:
        return None
    if needed is None:
        abort(403, description=f"Your role ({user.role}) may not do this. Nothing was changed.")
    if not users.allows(user.role, needed):
        abort(
            403,
            description=f"Your role ({user.role}) may not {users.PERMISSIONS[needed]}. "
            "Nothing was changed; ask whoever runs this server for a role that may.",
        )
    return None


def _load_user() -> User | None:
    """The session's user, if it still exists and is not disabled (else the session ends)."""
    user_id = session.get("user_id")
    user = db.session.get(User, user_id) if isinstance(user_id, int) else None
    if user is not None and not user.active:
        user = None
    if user is None and "user_id" in session:
        session.clear()
    g.user = user
    return user


def _to_login() -> ResponseReturnValue:
    if request.headers.get("HX-Request") == "true":
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        here = current.path + (f"?{current.query}" if current.query else "")
        login = url_for("auth.login", next=safe_next(here))
        response, status = error_response(401, "Log in to continue.")
        return response, status, {"HX-Redirect": login}
    here = request.full_path if request.query_string else request.path
    target = here if request.method in SAFE_METHODS else None
    return redirect(url_for("auth.login", next=safe_next(target)), 303)
