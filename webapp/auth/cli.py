"""`flask users ...`: the people who log in to the browser pages when AUTH_REQUIRED is on.

Passwords are typed at a hidden prompt (twice) or read from stdin with --password-stdin, so
they never appear in the shell history or the process list; only their hash is stored.
"""

from __future__ import annotations

import sys
from datetime import datetime

import click
from flask.cli import AppGroup
from sqlalchemy import select

from webapp.auth import users
from webapp.extensions import db
from webapp.models import User

users_cli = AppGroup("users", help="Users of the browser pages and their roles.")

ROLE = click.Choice(list(users.ROLES))
PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="read the password from the first line of stdin (for scripts) instead of a prompt",
)


@users_cli.command("create")
@click.argument("name")
@click.option("--role", type=ROLE, required=True, help="viewer, clinician or researcher")
@PASSWORD_STDIN
def create_command(name: str, role: str, password_stdin: bool) -> None:
    """Make a user called NAME with ROLE; the password is asked for (hidden) twice."""
    password = _password(password_stdin)
    try:
        user = users.create_user(name, password, role)
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {user.id} ({user.name}, {user.role}) created")


@users_cli.command("list")
def list_command() -> None:
    """Every user: id, name, role, when made, last login, disabled (never a password)."""
    records = db.session.scalars(select(User).order_by(User.id)).all()
    if not records:
        click.echo("no users; make one with 'flask users create NAME --role clinician'")
        return
    click.echo("id\tname\trole\tcreated\tlast login\tdisabled")
    for u in records:
        cells = [u.id, u.name, u.role, _when(u.created_at), _when(u.last_login_at)]
        click.echo("\t".join(str(c) for c in [*cells, _when(u.disabled_at)]))


@users_cli.command("set-role")
@click.argument("name")
@click.argument("role", type=ROLE)
def set_role_command(name: str, role: str) -> None:
    """Give NAME another ROLE; it applies from the user's next request."""
    user = _user_or_fail(name)
    users.set_role(user, role)
    click.echo(f"{user.name} is now {role}")


@users_cli.command("set-password")
@click.argument("name")
@PASSWORD_STDIN
def set_password_command(name: str, password_stdin: bool) -> None:
    """Give NAME a new password (asked for twice, hidden)."""
    user = _user_or_fail(name)
    try:
        users.set_password(user, _password(password_stdin))
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password of {user.name} changed")


@users_cli.command("disable")
@click.argument("name")
def disable_command(name: str) -> None:
    """Stop NAME logging in; an open session ends at its next request. The row stays."""
    user = _user_or_fail(name)
    if not user.active:
        click.echo(f"{user.name} was disabled already")
        return
    users.set_disabled(user, True)
    click.echo(f"disabled {user.name}")


@users_cli.command("enable")
@click.argument("name")
def enable_command(name: str) -> None:
    """Let a disabled user log in again."""
    user = _user_or_fail(name)
    users.set_disabled(user, False)
    click.echo(f"enabled {user.name}")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _user_or_fail(name: str) -> User:
    user = users.find(name)
    if user is None:
        raise click.ClickException(f"there is no user {name!r}; 'flask users list' shows them")
    return user


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"
