"""`flask tokens ...`: API tokens for /api/v1. A token is printed once and stored only hashed."""

from __future__ import annotations

from datetime import datetime

import click
from flask.cli import AppGroup
from sqlalchemy import select

from webapp import audit
from webapp.api.auth import SCOPES, issue_token
from webapp.extensions import db
from webapp.models import ApiToken, now

tokens_cli = AppGroup("tokens", help="API tokens for /api/v1 (stored hashed, shown once).")


@tokens_cli.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    type=click.Choice(SCOPES),
    multiple=True,
    required=True,
    help="read (GET routes) or write (predict, delete, operating points); repeat for both.",
)
def create_command(name: str, scopes: tuple[str, ...]) -> None:
    """Make a token called NAME and print it."""
    try:
        record, token = issue_token(name, list(scopes))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    click.echo(f"token {record.id} ({record.name}, scopes: {record.scopes}):")
    click.echo(token)
    click.echo("Copy it now: it is stored only as a hash and will not be shown again.")


@tokens_cli.command("list")
def list_command() -> None:
    """Every token: id, name, scopes, when made, last used and revoked (never the token)."""
    records = db.session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
    if not records:
        click.echo("no tokens; make one with 'flask tokens create NAME --scope read'")
        return
    click.echo("id\tname\tscopes\tcreated\tlast used\trevoked")
    for r in records:
        cells = [r.id, r.name, r.scopes, _when(r.created_at)]
        cells += [_when(r.last_used_at), _when(r.revoked_at)]
        click.echo("\t".join(str(c) for c in cells))


@tokens_cli.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
def revoke_command(token_id: int) -> None:
    """Revoke token ID: it gets 401 from then on. The row stays, for the record."""
    record = db.session.get(ApiToken, token_id)
    if record is None:
        raise click.ClickException(f"there is no token {token_id}; 'flask tokens list' shows them")
    if record.revoked_at is not None:
        click.echo(f"token {token_id} ({record.name}) was revoked already")
        return
    record.revoked_at = now()
    audit.record("token", f"token {record.id}", revoked=record.name)
    db.session.commit()
    click.echo(f"revoked token {token_id} ({record.name})")


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"
