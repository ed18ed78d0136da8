"""Bearer tokens for /api/v1: made once, stored only as SHA-256, checked by that hash.

A token is looked up by the hash of what the client sent, so the plain token is never stored
and never compared byte by byte (a timing difference would reveal nothing about a stored hash).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from webapp import audit
from webapp.errors import error_response
from webapp.extensions import db
from webapp.models import ApiToken, now

SCOPES = ("read", "write")
View = TypeVar("View", bound=Callable[..., ResponseReturnValue])


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(name: str, scopes: list[str]) -> tuple[ApiToken, str]:
    """Store a new token under `name`; returns the row and the plain token (shown once)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("give the token a name of 1 to 100 characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {scopes}")
    token = secrets.token_urlsafe(32)
    record = ApiToken(
        name=name,
        token_sha256=hash_token(token),
        scopes=" ".join(s for s in SCOPES if s in scopes),
    )
    db.session.add(record)
    db.session.flush()  # the id, for the audit row
    audit.record("token", f"token {record.id}", created=record.name, scopes=record.scopes)
    db.session.commit()
    return record, token


def presented_token() -> ApiToken | None:
    """The live token named by the `Authorization: Bearer` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    record = db.session.scalar(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token)))
    if record is None or record.revoked_at is not None:
        return None
    return record


def require(scope: str) -> Callable[[View], View]:
    """Run the view only for a live token holding `scope`: 401 without one, 403 without scope."""

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            token = presented_token()
            if token is None:
                return _unauthorised()
            if not token.allows(scope):
                return error_response(
                    403, f"this token does not hold the {scope!r} scope; make one that does"
                )
            token.last_used_at = now()
            db.session.commit()
            g.api_token = token
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorator


def _unauthorised() -> ResponseReturnValue:
    response, status = error_response(
        401,
        "send a valid API token as 'Authorization: Bearer <token>' "
        "(make one with 'flask tokens create')",
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, status
