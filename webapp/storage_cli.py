"""`flask storage clean`: remove upload files that no record refers to (after a crash)."""

from __future__ import annotations

import click
from flask.cli import AppGroup
from sqlalchemy import select

from webapp import storage
from webapp.extensions import db
from webapp.models import Job, SliceResult

storage_cli = AppGroup("storage", help="Files stored for uploads.")


@storage_cli.command("clean")
@click.option("--older-than", default=60, show_default=True, help="minutes; younger files stay")
@click.option("--dry-run", is_flag=True, help="list what would go, delete nothing")
def clean_command(older_than: int, dry_run: bool) -> None:
    """Delete files of uploads whose prediction was never stored or was deleted."""
    referenced = set(db.session.scalars(select(SliceResult.stored_name)))
    for job in db.session.scalars(select(Job).where(Job.status.in_(("queued", "running")))):
        referenced.update(item["stored"] for item in job.inputs)
    found = storage.orphans(referenced, older_than * 60)
    for path in found:
        click.echo(f"{'would remove' if dry_run else 'removed'} {path.name}")
        if not dry_run:
            path.unlink(missing_ok=True)
    click.echo(f"{len(found)} orphaned file(s){' (dry run)' if dry_run else ''}")
