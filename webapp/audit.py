"""The audit log: one row per action that changes what is stored.

`record` adds the row to the current database session; it is committed with the change it
describes, so an action and its audit row are stored together or not at all.
"""

from __future__ import annotations

from typing import Any

import click
from flask import g, has_app_context, has_request_context
from flask.cli import AppGroup
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import AuditEvent

ACTIONS = (
    "upload", "predict", "delete", "note", "review", "operating_point", "token",
    "user", "login", "logout", "login_failed", "reap",
)  # fmt: skip


def actor() -> str:
    """The API token, the logged-in user's name, "browser" for the web pages without a login
    (AUTH_REQUIRED off, or a failed login), "job worker" for a job run off the request, or
    "cli" outside a request."""
    if not has_request_context():
        # A job thread or queue worker says so in `g`; anything else outside a request is the CLI.
        return g.get("audit_actor", "cli") if has_app_context() else "cli"
    token = g.get("api_token")
    if token is not None:
        return f"api token {token.id} ({token.name})"
    user = g.get("user")
    if user is not None:
        return user.name
    return "browser"


def record(action: str, target: str, **detail: Any) -> None:
    """Add an audit row for `action` on `target` to the session (the caller commits)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; choose one of {', '.join(ACTIONS)}")
    db.session.add(AuditEvent(actor=actor(), action=action, target=target[:200], detail=detail))


audit_cli = AppGroup("audit", help="The audit log (who did what, when).")


@audit_cli.command("show")
@click.option("--last", default=50, show_default=True, help="how many events, newest last")
def show_command(last: int) -> None:
    """Print the latest events."""
    events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(last))
    for event in reversed(list(events)):
        when = event.at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{when}\t{event.actor}\t{event.action}\t{event.target}\t{event.detail}")
