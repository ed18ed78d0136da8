"""One error handler: a JSON body for API routes, an HTML page for the browser.

No stack trace ever reaches a user; the log keeps it.
"""

from __future__ import annotations

from flask import Flask, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES


class ModelNotLoaded(RuntimeError):
    """No bundle could be loaded, or it cannot predict as configured; the message says why."""


MESSAGES = {
    400: "The request was not understood.",
    404: "There is nothing at this address. It may have been deleted.",
    405: "This address does not accept that kind of request.",
    413: "The upload is larger than this server accepts ({limit} MB). Send fewer or smaller files.",
    503: "No model can predict now, so nothing was predicted or stored.",
}


def error_response(status: int, message: str, code: str | None = None):
    """JSON `{"error": {"code", "message"}}` under /api/ and for a `.json` address (what a
    page's script fetches), the error page elsewhere."""
    code = code or _code(status)
    if request.path.startswith("/api/") or request.path.endswith(".json"):
        return jsonify(error={"code": code, "message": message}), status
    return render_template("errors/error.html", status=status, message=message), status


def _code(status: int) -> str:
    """'payload_too_large' for 413: the standard reason phrase as an identifier."""
    phrase = HTTP_STATUS_CODES.get(status, "error")
    return phrase.lower().replace(" ", "_").replace("-", "_")


def _http_error(exc: HTTPException):
    """The view's own description when it gave one (abort(400, description=...)), else ours."""
    from flask import current_app

    status = exc.code or 500
    custom = exc.description and exc.description != type(exc).description
    message = exc.description if custom else MESSAGES.get(status, exc.description or "")
    if status == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
        message = MESSAGES[413].format(limit=f"{limit:g}")
    return error_response(status, message)


def _csrf_error(exc: CSRFError):
    return error_response(
        400,
        f"The form had expired or was not sent by this site ({exc.description}). "
        "Reload the page and try again.",
        "csrf",
    )


def _model_not_loaded(exc: ModelNotLoaded):
    return error_response(503, f"{MESSAGES[503]} {exc}", "model_not_loaded")


def _database_error(exc: OperationalError):
    """A lock held too long or a full disk: the request changed nothing and may be retried."""
    from flask import current_app

    from webapp.extensions import db

    db.session.rollback()
    text = str(exc.orig).lower()
    if "locked" in text or "busy" in text:
        response = make_response(
            error_response(
                503, "The database is busy; nothing was changed. Try again in a moment.", "busy"
            )
        )
        response.headers["Retry-After"] = "5"
        return response
    if "full" in text:
        return error_response(
            507, "The server's disk is full; nothing was changed. Tell the administrator."
        )
    current_app.logger.exception("database error on %s", request.path)
    return error_response(500, "The database failed; nothing was changed.")


def _unexpected(exc: Exception):
    from flask import current_app

    current_app.logger.exception("unhandled error on %s", request.path)
    return error_response(500, "Something went wrong on the server; nothing was changed.")


def register(app: Flask) -> None:
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ModelNotLoaded, _model_not_loaded)
    app.register_error_handler(OperationalError, _database_error)
    if not app.testing:  # tests should see the exception itself
        app.register_error_handler(InternalServerError, _unexpected)
        app.register_error_handler(Exception, _unexpected)
