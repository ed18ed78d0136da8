"""Uploaded slices on disk: generated names under the instance folder, renderings cached beside.

A user's file name is shown, never used as a path. DICOM files are de-identified before they are
written (see webapp.deid) unless the deployment opts out with DEIDENTIFY_DICOM = False.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from webapp.deid import deidentify
from webapp.extensions import db
from webapp.models import Job, SliceResult

SUFFIXES = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
PARTIAL = ".partial"  # suffix of a slice written but not yet committed


def upload_root() -> Path:
    root = Path(current_app.config["UPLOAD_DIR"] or Path(current_app.instance_path) / "uploads")
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store(data: bytes, file_format: str) -> str:
    """Write one validated slice under a temporary name; returns the name it will have.

    The file becomes visible under that name only through `publish`, which the caller runs
    after the database commit that refers to it: a crash in between leaves a `.partial` file
    that `flask storage clean` removes, never a record without its file or a half-written one.
    """
    if file_format == "dicom" and current_app.config["DEIDENTIFY_DICOM"]:
        data = deidentify(data)
    name = uuid.uuid4().hex + SUFFIXES[file_format]
    folder = upload_root() / name[:2]
    folder.mkdir(exist_ok=True)
    partial = folder / (name + PARTIAL)
    try:
        with partial.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the database says it exists
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return name


def publish(stored_name: str) -> None:
    """Move a slice written by `store` into place (atomic on one file system)."""
    path = path_of(stored_name)
    path.with_name(path.name + PARTIAL).replace(path)


def discard(stored_name: str) -> None:
    """Remove a slice written by `store` that will not be published."""
    path = path_of(stored_name)
    path.with_name(path.name + PARTIAL).unlink(missing_ok=True)
    remove(stored_name)


def path_of(stored_name: str) -> Path:
    """Where a stored slice lives. Names come from `store`, but are checked anyway."""
    if not stored_name or "/" in stored_name or "\\" in stored_name or stored_name.startswith("."):
        raise ValueError(f"not a stored slice name: {stored_name!r}")
    return upload_root() / stored_name[:2] / stored_name


def cache_path(stored_name: str, kind: str) -> Path:
    """A rendering cached next to its slice, e.g. kind 'window-brain.png' or 'cam-gradcam.png'."""
    return path_of(stored_name).with_name(f"{stored_name}.{kind}")


def remove(stored_name: str) -> None:
    """Delete a slice and every rendering cached beside it."""
    path = path_of(stored_name)
    for file in path.parent.glob(f"{stored_name}*"):
        file.unlink(missing_ok=True)
    if path.parent.exists() and not any(path.parent.iterdir()):
        shutil.rmtree(path.parent, ignore_errors=True)


def orphans(referenced: set[str], older_than_seconds: float) -> list[Path]:
    """Stored files (slices and their cached renderings) that no record refers to any more.

    A file younger than `older_than_seconds` is left alone: its upload may still be on its way
    to the database. An older `.partial` file is an orphan whatever refers to it: publishing
    takes milliseconds, so its upload's process died between writing and committing.
    """
    import time

    cutoff = time.time() - older_than_seconds
    found = []
    for path in sorted(upload_root().glob("*/*")):
        stored_name = ".".join(path.name.split(".")[:2])  # "<hex>.png" of "<hex>.png.cam-...png"
        unclaimed = stored_name not in referenced or path.name.endswith(PARTIAL)
        if unclaimed and path.stat().st_mtime < cutoff:
            found.append(path)
    return found


storage_cli = AppGroup("storage", help="Files stored for uploads.")


@storage_cli.command("clean")
@click.option("--older-than", default=60, show_default=True, help="minutes; younger files stay")
@click.option("--dry-run", is_flag=True, help="list what would go, delete nothing")
def clean_command(older_than: int, dry_run: bool) -> None:
    """Delete files of uploads whose prediction was never stored or was deleted."""
    referenced = set(db.session.scalars(select(SliceResult.stored_name)))
    for job in db.session.scalars(select(Job).where(Job.status.in_(("queued", "running")))):
        referenced.update(item["stored"] for item in job.inputs)
    found = orphans(referenced, older_than * 60)
    for path in found:
        click.echo(f"{'would remove' if dry_run else 'removed'} {path.name}")
        if not dry_run:
            path.unlink(missing_ok=True)
    click.echo(f"{len(found)} orphaned file(s){' (dry run)' if dry_run else ''}")
