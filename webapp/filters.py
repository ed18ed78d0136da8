"""Jinja filters that format numbers the same way on every page."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask

from ml import interval, number, percent, percent_interval


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
        "percent_interval": percent_interval,
        "when": when,
    }.items():
        app.add_template_filter(function, name)
