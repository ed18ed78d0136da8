"""URL converters: a path value no row can have is a 404 before it reaches the database.

PostgreSQL refuses what SQLite takes in its stride: a whole number beyond its 32-bit INTEGER
(every id column is one) and text holding a NUL character. Without these converters
`/predictions/2147483648` or `/jobs/%00` would be a database error on PostgreSQL and a 404 on
SQLite; with them both answer 404.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map, UnicodeConverter, ValidationError

MAX_ID = 2**31 - 1  # PostgreSQL's INTEGER


class RowNumber(IntegerConverter):
    """`<int:...>`, at most MAX_ID unless the rule says otherwise."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


class Segment(UnicodeConverter):
    """A path segment (the default converter) without NUL characters."""

    def to_python(self, value: str) -> str:
        if "\x00" in value:
            raise ValidationError()
        return value


def init_app(app: Flask) -> None:
    """Replace the default converters; call before any blueprint is registered."""
    app.url_map.converters.update(default=Segment, string=Segment, int=RowNumber)
