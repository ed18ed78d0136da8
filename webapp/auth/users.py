"""Users of the browser pages: roles, password hashes and the login rate limit.

Roles (only when AUTH_REQUIRED is on; with it off there are no users and every page and form
works for whoever reaches the server, as before):

| what                                                     | viewer | clinician | researcher |
|----------------------------------------------------------|--------|-----------|------------|
| see results, history (and its CSV), model pages, the     | yes    | yes       | yes        |
| threshold studio read-only, Grad-CAM, job progress       |        |           |            |
| upload slices or studies (`upload`)                      |        | yes       |            |
| save a note, record a review (`annotate`)                |        | yes       |            |
| delete a result and its files (`delete`)                 |        | yes       |            |
| save, activate or delete operating points                |        |           | yes        |
| (`operating_points`)                                     |        |           |            |

A researcher does not upload: an upload stores a patient's images and puts a result into the
history that clinicians read, which is clinical work. A researcher measures the model with
`python -m ml evaluate` on a labelled folder, which leaves the history alone. A clinician does
not move thresholds: what counts as positive is decided apart from reading single results, and
each change is audited under the researcher's name. The JSON API is governed by its tokens'
scopes, not by these roles.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash, generate_password_hash

from webapp import audit
from webapp.extensions import db
from webapp.models import LoginFailure, User, now

PERMISSIONS = {
    "upload": "upload images",
    "annotate": "save notes or reviews",
    "delete": "delete results",
    "operating_points": "save, activate or delete operating points",
}
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "clinician": frozenset({"upload", "annotate", "delete"}),
    "researcher": frozenset({"operating_points"}),
}
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # longer input is refused before it is hashed
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The audit log names its actors "browser" and "cli"; a user must not be mistaken for either.
RESERVED_NAMES = ("browser", "cli")
# One address may fail this many times the per-name limit, summed over every name it tries.
ADDRESS_FACTOR = 4


class UserError(ValueError):
    """A user cannot be made or changed as asked; the message says why and what to do."""


def allows(role: str, permission: str) -> bool:
    """Whether `role` may do `permission` (one of PERMISSIONS); seeing pages needs none."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; one of {', '.join(PERMISSIONS)}")
    return permission in ROLES.get(role, frozenset())


def find(name: str) -> User | None:
    return db.session.scalar(select(User).where(User.name == name))


def create_user(name: str, password: str, role: str) -> User:
    """Store a new user with a hashed password; the password itself is kept nowhere."""
    name = name.strip()
    if not NAME_PATTERN.fullmatch(name) or name.lower() in RESERVED_NAMES:
        raise UserError(
            "a user name has 1 to 64 letters, digits, '.', '_' or '-', starts with a letter or "
            f"digit, and is not {' or '.join(RESERVED_NAMES)}"
        )
    _check_role(role)
    if find(name) is not None:
        raise UserError(f"there is a user called {name!r} already; 'flask users list' shows them")
    user = User(name=name, password_hash=_hash(password), role=role)
    db.session.add(user)
    audit.record("user", f"user {name}", created=name, role=role)
    db.session.commit()
    return user


def set_role(user: User, role: str) -> None:
    _check_role(role)
    audit.record("user", f"user {user.name}", role=role, was=user.role)
    user.role = role
    db.session.commit()


def set_password(user: User, password: str) -> None:
    user.password_hash = _hash(password)
    audit.record("user", f"user {user.name}", password="changed")
    db.session.commit()


def set_disabled(user: User, disabled: bool) -> None:
    """Disable (no login, open sessions end at their next request) or enable again."""
    user.disabled_at = now() if disabled else None
    audit.record("user", f"user {user.name}", disabled=disabled)
    db.session.commit()


def authenticate(name: str, password: str) -> User | None:
    """The active user with this name and password, else None (never saying which was wrong).

    An unknown or disabled name still costs one hash check, so the answer's timing does not
    tell whether a name exists.
    """
    user = find(name)
    if len(password) > MAX_PASSWORD_LENGTH:
        return None
    if user is None or not user.active:
        check_password_hash(_decoy_hash(), password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def locked_out(name: str, address: str, *, max_failures: int, window: timedelta) -> bool:
    """True after `max_failures` failed logins for this name from this address within `window`,
    or `ADDRESS_FACTOR` times as many from this address for any names.

    Counting per name *and* address means nobody elsewhere can lock a user out by typing
    their name wrongly; the per-address sum stops one client trying many names.
    """
    recent = select(func.count(LoginFailure.id)).where(
        LoginFailure.at >= now() - window, LoginFailure.address == address
    )
    if db.session.scalar(recent.where(LoginFailure.name == name)) >= max_failures:
        return True
    return db.session.scalar(recent) >= max_failures * ADDRESS_FACTOR


def record_failure(name: str, address: str, *, window: timedelta) -> None:
    """Count a failed login (the caller commits) and forget failures older than `window`."""
    db.session.execute(delete(LoginFailure).where(LoginFailure.at < now() - window))
    db.session.add(LoginFailure(name=name[:64], address=address[:64]))


def clear_failures(name: str, address: str) -> None:
    """After a successful login, earlier typing mistakes from there no longer count."""
    db.session.execute(
        delete(LoginFailure).where(LoginFailure.name == name, LoginFailure.address == address)
    )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def _hash(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    return generate_password_hash(password, method="scrypt")


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """A hash of a random password, checked in place of a missing user's."""
    import secrets

    return generate_password_hash(secrets.token_urlsafe(16), method="scrypt")
