"""Database tables. The schema changes only through migrations (migrations/versions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from webapp.extensions import db
from webapp.search import searchable

REVIEWS = ("agree", "disagree")
LABELS = ("Normal", "Stroke")


def now() -> datetime:
    return datetime.now(UTC)


def new_public_id() -> str:
    return uuid.uuid4().hex


class BundleRecord(db.Model):
    """A model bundle this deployment has seen; predictions refer to it by its id (hash)."""

    __tablename__ = "bundles"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    backbone: Mapped[str] = mapped_column(String(200))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    # Trained on synthetic phantoms only (ml's Bundle.synthetic_only). None: registered before
    # it was recorded; filled when the bundle is registered again.
    synthetic_only: Mapped[bool | None] = mapped_column(Boolean)


class Job(db.Model):
    """One upload being predicted; the browser polls it while a study runs."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex, not guessable
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    mode: Mapped[str] = mapped_column(String(10))  # slice | study | batch
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued|running|done|failed
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # What the worker needs: original names, stored names and hashes of the uploaded slices.
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # How to label: {"threshold": t} or {"operating_point": name}; None means the active point.
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Last sign of life: made, started, or a slice predicted. `flask jobs reap` fails a job
    # queued or running that has been silent too long. Nullable only because SQLite cannot add
    # a NOT NULL column without rebuilding the table; migration 0006 fills it for older jobs.
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=now, onupdate=now, index=True
    )
    predictions: Mapped[list[Prediction]] = relationship(back_populates="job")

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


class Prediction(db.Model):
    """One result as it was made: a single slice, or a study of several slices of one patient.

    Provenance is copied, not referenced: the bundle, threshold and window in force at the time
    stay with the result even after the deployment moves on to another model or threshold.

    Identity: `id` is never reused, not even after a delete (AUTOINCREMENT on SQLite, a sequence
    on PostgreSQL; migration 0008). `public_id` is random and names the result on its pages and
    in the audit log; `version` counts the changes (SQLAlchemy's version counter), so a form can
    say which state of the result its reader saw, and an edit made meanwhile is not overwritten.
    """

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), default=new_public_id)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    kind: Mapped[str] = mapped_column(String(10))  # slice | study
    name: Mapped[str] = mapped_column(String(300))  # the file name, or a study's description
    content_sha256: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # provenance
    bundle_id: Mapped[str] = mapped_column(ForeignKey("bundles.id"), index=True)
    bundle_name: Mapped[str] = mapped_column(String(200))
    operating_point: Mapped[str] = mapped_column(String(100))
    threshold: Mapped[float] = mapped_column(Float)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(JSON)
    app_version: Mapped[str] = mapped_column(String(40))
    # the result
    score: Mapped[float] = mapped_column(Float)  # slice probability, or the study score
    label: Mapped[str] = mapped_column(String(10))
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False)
    uncertain_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    aggregation: Mapped[str | None] = mapped_column(String(20))  # studies only
    order_by: Mapped[str | None] = mapped_column(String(20))  # studies only
    # what a reader added
    note: Mapped[str] = mapped_column(Text, default="")
    review: Mapped[str | None] = mapped_column(String(10))  # agree | disagree
    true_label: Mapped[str | None] = mapped_column(String(10))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # name, note and slice file names, case-folded, for the history search (webapp.search)
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")

    job: Mapped[Job | None] = relationship(back_populates="predictions")
    slices: Mapped[list[SliceResult]] = relationship(
        back_populates="prediction",
        order_by="SliceResult.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    # The history filters by label or uncertainty, newest first: these indexes hand back the
    # page in order, with no sort of every matching row (label filter on 10,000: 0.2 ms, not 5).
    __table_args__ = (
        Index("ix_predictions_label_created_at", "label", "created_at"),
        Index("ix_predictions_uncertain_created_at", "uncertain", "created_at"),
        Index("ix_predictions_public_id", "public_id", unique=True),
        {"sqlite_autoincrement": True},
    )
    __mapper_args__: ClassVar[dict[str, Any]] = {"version_id_col": version}


@event.listens_for(Session, "before_flush")
def _refresh_search_text(session: Session, _context: object, _instances: object) -> None:
    """Recompute `search_text` of every result whose name, note or slices are being written."""
    touched = set()
    for obj in session.new:
        if isinstance(obj, Prediction):
            touched.add(obj)
        elif isinstance(obj, SliceResult) and obj.prediction is not None:
            touched.add(obj.prediction)
    for obj in session.dirty:
        if isinstance(obj, Prediction) and _changed(obj, "name", "note"):
            touched.add(obj)
    for prediction in touched:
        names = [s.original_name for s in prediction.slices]
        text = searchable(prediction.name, prediction.note, names)
        if prediction.search_text != text:
            prediction.search_text = text


def _changed(obj: object, *names: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


class SliceResult(db.Model):
    """One slice of a prediction, in slice order, and the file it was read from."""

    __tablename__ = "prediction_slices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # 0-based, in slice order
    original_name: Mapped[str] = mapped_column(String(300))  # shown, never used as a path
    stored_name: Mapped[str] = mapped_column(String(80))  # generated, under the upload folder
    file_format: Mapped[str] = mapped_column(String(10))  # png | jpeg | dicom
    content_sha256: Mapped[str] = mapped_column(String(64))
    probability: Mapped[float] = mapped_column(Float)
    fold_probabilities: Mapped[list[float]] = mapped_column(JSON)
    fold_std: Mapped[float] = mapped_column(Float)
    view_std: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(10))
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False)
    uncertain_reasons: Mapped[list[str]] = mapped_column(JSON)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)  # decoder facts (format, size, order tags)
    faithfulness: Mapped[dict[str, float] | None] = mapped_column(JSON)  # once a CAM was made
    # Why the slice does not look like an axial head CT (ml's check); None when it does.
    input_warning: Mapped[str | None] = mapped_column(Text)

    prediction: Mapped[Prediction] = relationship(back_populates="slices")


class OperatingPointRecord(db.Model):
    """A threshold this deployment saved or adopted for a bundle, at slice or patient level.

    The bundle's own points (thresholds.json) are read-only: the bundle is hashed. A deployment
    that moves the threshold records it here, with who, when, the OOF metrics at it and the
    uncertainty band's half-width measured on OOF data at that threshold. At most one row per
    (bundle, level) is active; with none, the bundle's own active point applies.
    """

    __tablename__ = "operating_points"
    __table_args__ = (UniqueConstraint("bundle_id", "level", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_id: Mapped[str] = mapped_column(ForeignKey("bundles.id"), index=True)
    level: Mapped[str] = mapped_column(String(10))  # slice | patient
    name: Mapped[str] = mapped_column(String(100))
    policy: Mapped[str] = mapped_column(String(30))  # "saved", or the bundle policy it copies
    threshold: Mapped[float] = mapped_column(Float)
    half_width: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # OOF counts and rates at threshold
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiToken(db.Model):
    """A bearer token for /api/v1. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(40))  # space-separated: read, write
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def allows(self, scope: str) -> bool:
        return self.revoked_at is None and scope in self.scopes.split()


class AuditEvent(db.Model):
    """Who did what, when: uploads, deletions, notes, reviews, operating points, tokens, users
    and logins.

    Rows are only ever added. The actor is the API token, the logged-in user's name, "browser"
    (when AUTH_REQUIRED is off, or for a failed login) or "cli"; `detail` holds the few facts
    needed to read the event later, never image data and never a password.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class User(db.Model):
    """A person who logs in to the browser pages (when AUTH_REQUIRED is on).

    Only a salted hash of the password is stored (werkzeug's scrypt). `role` is one of
    webapp.auth.users.ROLES; a disabled user cannot log in and loses any open session at once.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def active(self) -> bool:
        return self.disabled_at is None


class LoginFailure(db.Model):
    """One failed login, kept for the rate limit (webapp.auth.users.locked_out), then pruned."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, index=True)
    name: Mapped[str] = mapped_column(String(64))  # as typed, truncated; may name no user
    address: Mapped[str] = mapped_column(String(64))  # the client's IP address
