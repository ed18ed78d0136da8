"""Which stored result a request acts on, and whether it is still the one its page showed.

A result's number is never reused (migration 0008), and every form or link that changes a
result (note, review, delete, heat map) sends the result's random `public_id` as `record`; a
note or review also sends the `version` its page showed. A request whose result is gone, or is
not the one the page showed, or has changed since, is refused with a message that says so, and
nothing is stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from flask import abort
from sqlalchemy import select

from webapp.extensions import db
from webapp.filters import when
from webapp.models import AuditEvent, Prediction

PUBLIC_ID = re.compile(r"[0-9a-f]{32}")


def target(prediction: Prediction | int) -> str:
    """How the audit log names a result: by its number, which is never reused."""
    number = prediction if isinstance(prediction, int) else prediction.id
    return f"prediction {number}"


def deletion(prediction_id: int) -> AuditEvent | None:
    """The audit row of the result's deletion, when it was deleted."""
    return db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "delete", AuditEvent.target == target(prediction_id))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).first()


def gone_message(prediction_id: int, event: AuditEvent) -> str:
    return f"Result {prediction_id} was deleted {when(event.at)} by {event.actor}"


def get_prediction_or_gone(prediction_id: int) -> Prediction:
    """The result, or 410 when it was deleted, or 404 when it never existed."""
    found = db.session.get(Prediction, prediction_id)
    if found is not None:
        return found
    event = deletion(prediction_id)
    if event is not None:
        abort(410, description=f"{gone_message(prediction_id, event)}; nothing of it is stored.")
    abort(404, description=f"There is no result {prediction_id}.")


def get_prediction_for_change(
    prediction_id: int, form: Mapping[str, str], what: str, *, versioned: bool = True
) -> Prediction:
    """The result a form changes, refused unless it is the one (and the state) its page showed.

    `what` names the change in the refusal ("your note was not saved").
    """
    found = db.session.get(Prediction, prediction_id)
    if found is None:
        event = deletion(prediction_id)
        if event is not None:
            abort(410, description=f"{gone_message(prediction_id, event)}; {what}.")
        abort(404, description=f"There is no result {prediction_id}; {what}.")
    record = (form.get("record") or "").strip()
    if not PUBLIC_ID.fullmatch(record):
        message = f"The form does not say which result it is for; {what}. Reload the page."
        abort(400, description=message)
    if record != found.public_id:
        message = (
            f"Result {prediction_id} is not the result this page was made for; {what}. "
            "Open the result again from the history."
        )
        abort(409, description=message)
    if versioned and form.get("version") != str(found.version):
        abort(409, description=changed_message(prediction_id, what))
    return found


def changed_message(prediction_id: int, what: str) -> str:
    return (
        f"Result {prediction_id} was changed after this page was loaded; {what}. Reload the "
        "page to see the change, then try again."
    )
