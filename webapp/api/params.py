"""Reading API requests: query values, form flags and JSON bodies, each checked with a clear 400."""

from __future__ import annotations

import math
from typing import Any

from flask import request

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


class ApiError(Exception):
    """Answer with `{"error": {"code", "message"}}` and this status (the blueprint handles it)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def flag(name: str) -> bool:
    """A true/false form or query value; absent means false."""
    value = (request.values.get(name) or "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ApiError(400, f"{name} must be true or false, got {value!r}")


def number(value: Any, name: str) -> float:
    """A finite number from a query string or JSON (a JSON true is not the number 1)."""
    if value is None or value == "":
        raise ApiError(400, f"give {name}, a number")
    if isinstance(value, bool):
        raise ApiError(400, f"{name} must be a number, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(result):
        raise ApiError(400, f"{name} must be a finite number, got {value!r}")
    return result


def optional_number(source: Any, name: str) -> float | None:
    value = source.get(name)
    return None if value is None or value == "" else number(value, name)


def whole_number(name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    """A whole-number query value within [minimum, maximum]."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        between = f"between {minimum}{upper}" if upper else f"at least {minimum}"
        raise ApiError(400, f"{name} must be {between}, got {value}")
    return value


def json_body() -> dict[str, Any]:
    """The request's JSON object."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object with Content-Type: application/json")
    return body


def level_of(body: dict[str, Any]) -> str:
    level = body.get("level")
    if level not in ("slice", "patient"):
        raise ApiError(400, f"level must be slice or patient, got {level!r}")
    return level
