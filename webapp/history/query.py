"""The history filters, read from a query string into one SQL query (shared by page, CSV and the
API's list of predictions).

`CHOICES` and `DATES` are the one definition of what each filter accepts: the API's OpenAPI
document is built from them, and the API refuses other values with a 400 that says so. The
history page stays lenient (a hand-edited URL drops what it cannot use, never errors).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, select
from werkzeug.datastructures import MultiDict

from webapp.models import LABELS, Prediction
from webapp.search import needle

SORTS = {
    "newest": (Prediction.created_at.desc(), Prediction.id.desc()),
    "oldest": (Prediction.created_at.asc(), Prediction.id.asc()),
    "score_high": (Prediction.score.desc(), Prediction.id.desc()),
    "score_low": (Prediction.score.asc(), Prediction.id.asc()),
    "name": (Prediction.name.asc(), Prediction.id.asc()),
}


CHOICES: dict[str, tuple[str, ...]] = {
    "label": LABELS,
    "uncertain": ("yes", "no"),
    "review": ("agree", "disagree", "none"),
    "sort": tuple(SORTS),
}
DATES = ("since", "until")  # YYYY-MM-DD, both inclusive


class BadFilter(ValueError):
    """A filter value the query cannot use; the message names the parameter and what it takes."""


@dataclass(frozen=True)
class Filters:
    q: str = ""
    label: str = ""
    uncertain: str = ""  # "yes" | "no" | ""
    review: str = ""  # "agree" | "disagree" | "none" | ""
    since: str = ""  # YYYY-MM-DD, inclusive
    until: str = ""  # YYYY-MM-DD, inclusive
    bundle: str = ""
    job: str = ""
    sort: str = "newest"

    @classmethod
    def from_args(cls, args: MultiDict, *, strict: bool = False) -> Filters:
        """The filters of a query string.

        Leniently (the history page), a value not in `CHOICES` or not a date is dropped, so a
        hand-edited URL never errors; `strict` (the API) raises BadFilter instead. NUL
        characters are dropped either way: no stored text holds one, and PostgreSQL refuses
        them outright.
        """
        raw = {
            f.name: (args.get(f.name) or "").replace("\x00", "").strip()[:200] for f in fields(cls)
        }
        for key, allowed in CHOICES.items():
            if raw[key] and raw[key] not in allowed:
                if strict:
                    raise BadFilter(f"{key} must be one of {', '.join(allowed)}; got {raw[key]!r}")
                raw[key] = ""
        for key in DATES:
            if _day(raw[key]) is None:
                if strict:
                    raise BadFilter(f"{key} must be a date as YYYY-MM-DD; got {raw[key]!r}")
                raw[key] = ""
        return cls(**{**raw, "sort": raw["sort"] or "newest"})

    def as_args(self) -> dict[str, str]:
        """The filters that are set, for links (paging, CSV) that must keep them."""
        return {k: v for k, v in self.__dict__.items() if v and not (k == "sort" and v == "newest")}

    def query(self) -> Select:
        stmt = select(Prediction)
        if self.q:
            # Literal (autoescape: % _ and \\ are characters to find); case was folded on
            # both sides already (webapp.search), so a plain LIKE serves both databases.
            stmt = stmt.where(Prediction.search_text.contains(needle(self.q), autoescape=True))
        if self.label:
            stmt = stmt.where(Prediction.label == self.label)
        if self.uncertain:
            stmt = stmt.where(Prediction.uncertain.is_(self.uncertain == "yes"))
        if self.review == "none":
            stmt = stmt.where(Prediction.review.is_(None))
        elif self.review:
            stmt = stmt.where(Prediction.review == self.review)
        if self.since:
            stmt = stmt.where(Prediction.created_at >= _start(self.since))
        if self.until and date.fromisoformat(self.until) < date.max:  # the last day: no bound
            stmt = stmt.where(Prediction.created_at < _start(self.until) + timedelta(days=1))
        if self.bundle:
            stmt = stmt.where(Prediction.bundle_id == self.bundle)
        if self.job:
            stmt = stmt.where(Prediction.job_id == self.job)
        return stmt.order_by(*SORTS[self.sort])


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else date.min
    except ValueError:
        return None


def _start(text: str) -> datetime:
    return datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
