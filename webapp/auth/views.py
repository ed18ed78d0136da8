"""Routes of the login form and of logout."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from webapp import audit
from webapp.auth import users
from webapp.auth.guard import current_user, safe_next
from webapp.extensions import db
from webapp.models import User, now
from webapp.render import render

bp = Blueprint("auth", __name__)

REFUSED = "Wrong user name or password, or the account is disabled."


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The login form, and its answer: a new session, or one message whatever was wrong."""
    if request.method == "POST":
        name = request.form.get("name", "").replace("\x00", "").strip()[:64]
        return _attempt(name, request.form.get("password", ""))
    if current_user() is not None:
        return redirect(safe_next(request.args.get("next")) or url_for("predict.upload_form"), 303)
    return _page()


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session (a POST carrying the CSRF token, so no other site can log anyone out)."""
    user = current_user()
    if user is not None:
        audit.record("logout", f"user {user.name}")
        db.session.commit()
    session.clear()
    return redirect(url_for(".login"), 303)


def _attempt(name: str, password: str) -> ResponseReturnValue:
    address = (request.remote_addr or "unknown")[:64]
    window = timedelta(minutes=current_app.config["LOGIN_WINDOW_MINUTES"])
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    if users.locked_out(name, address, max_failures=limit, window=window):
        audit.record("login_failed", f"user {name}", address=address, refused="rate limit")
        db.session.commit()
        minutes = current_app.config["LOGIN_WINDOW_MINUTES"]
        message = f"Too many failed logins from here; try again in {minutes} minutes."
        return _page(name=name, error=message), 429
    user = users.authenticate(name, password)
    if user is None:
        users.record_failure(name, address, window=window)
        audit.record("login_failed", f"user {name}", address=address)
        db.session.commit()
        return _page(name=name, error=REFUSED), 401
    session.clear()  # a fresh session: nothing set before the login survives it
    session["user_id"] = user.id
    g.user = user  # the audit row below names the user
    user.last_login_at = now()
    users.clear_failures(name, address)
    audit.record("login", f"user {user.name}", address=address)
    db.session.commit()
    return redirect(safe_next(request.form.get("next")) or url_for("predict.upload_form"), 303)


def _page(name: str = "", error: str | None = None) -> str:
    no_users = db.session.scalar(select(func.count(User.id))) == 0
    target = safe_next(request.values.get("next"))
    return render("auth/login.html", name=name, error=error, next=target, no_users=no_users)
