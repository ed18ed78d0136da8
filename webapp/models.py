"""Database tables. The schema changes only through migrations (migrations/versions)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db


def _now() -> datetime:
    return datetime.now(UTC)


class BundleRecord(db.Model):
    """A model bundle this deployment has seen; predictions will refer to it by its id (hash)."""

    __tablename__ = "bundles"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    backbone: Mapped[str] = mapped_column(String(200))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
