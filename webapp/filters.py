"""Jinja filters that format numbers the same way on every page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask


def number(value: Any, digits: int = 3) -> str:
    """0.123 for a number, 'n/a' for a missing one; never '-0.000'."""
    if value is None:
        return "n/a"
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def percent(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * float(value):.{digits}f}%"


def interval(pair: Any, digits: int = 3) -> str:
    """'0.52–0.76' for a (low, high) pair."""
    if not pair:
        return "n/a"
    low, high = pair
    return f"{float(low):.{digits}f}–{float(high):.{digits}f}"


def when(value: datetime | None) -> str:
    """UTC time to the minute, as stored."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset; SQLite hands back naive datetimes, stored in UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def init_app(app: Flask) -> None:
    for name, function in {
        "number": number,
        "percent": percent,
        "interval": interval,
        "when": when,
    }.items():
        app.add_template_filter(function, name)
