"""The history search text: a result's name, note and every slice's file name, case-folded.

A search is then one LIKE over one column of one table, instead of three, one of them a scan of
every stored slice. Both sides are folded here in Python (full Unicode: "SCHÄDEL" finds
"Schädel", "STRASSE" finds "Straße"), so the same plain LIKE answers alike on SQLite and
PostgreSQL. `Prediction.search_text` is kept current on every ORM flush (webapp.models); a
change made with raw SQL must set it too (`searchable`).
"""

from __future__ import annotations

from collections.abc import Iterable

SEPARATOR = "\n"  # between the parts, so that no search matches across two of them


def searchable(name: str, note: str, slice_names: Iterable[str]) -> str:
    return SEPARATOR.join([name or "", note or "", *slice_names]).casefold()


def needle(text: str) -> str:
    """What to look for: the query folded as the stored text is, on one line."""
    return " ".join(text.splitlines()).casefold()
