"""History: filters, search, sort, paging, the HTMX fragment and the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from tests.web.helpers import BOTH_DATABASES, phantom_slices, upload, wait_for_job
from webapp.extensions import db
from webapp.models import Prediction

pytestmark = BOTH_DATABASES


@pytest.fixture
def filled(make_app, phantom_data):
    """Five slice results with varied labels, notes, reviews and dates."""
    app = make_app(HISTORY_PAGE_SIZE=2)
    client = app.test_client()
    response = upload(client, phantom_slices(phantom_data, 5))
    wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with app.app_context():
        rows = db.session.scalars(db.select(Prediction).order_by(Prediction.id)).all()
        for i, p in enumerate(rows):
            p.created_at = start + timedelta(days=i)
            p.score = 0.1 + 0.2 * i
            p.label = "Stroke" if i >= 3 else "Normal"
            p.uncertain = i == 2
            p.note = "=HYPERLINK(1)" if i == 4 else ("motion artefact" if i == 1 else "")
            p.review = "agree" if i == 0 else None
        db.session.commit()
        names = [p.name for p in rows]
    return app, client, names


def _ids(client, query: str) -> list[int]:
    text = client.get(f"/history/export.csv?{query}").get_data(as_text=True)
    return [int(row["id"]) for row in csv.DictReader(io.StringIO(text))]


def test_filters_search_and_sort(filled) -> None:
    _, client, names = filled
    assert _ids(client, "") == [5, 4, 3, 2, 1]  # newest first
    assert _ids(client, "sort=oldest") == [1, 2, 3, 4, 5]
    assert _ids(client, "sort=score_high")[0] == 5
    assert _ids(client, "label=Stroke") == [5, 4]
    assert _ids(client, "uncertain=yes") == [3]
    assert _ids(client, "review=agree") == [1] and 1 not in _ids(client, "review=none")
    assert _ids(client, "q=MOTION") == [2]  # note, any case
    assert _ids(client, f"q={names[3]}") == [4]  # file name
    assert _ids(client, "since=2026-01-02&until=2026-01-03") == [3, 2]
    assert _ids(client, "bundle=nope") == []
    assert _ids(client, "label=bogus&since=not-a-date") == [5, 4, 3, 2, 1]  # ignored, not an error


@pytest.mark.parametrize(
    "query",
    [
        "label=stroke&uncertain=true&review=xyz&since=yesterday&sort=random",
        "until=9999-12-31",
        "since=0001-01-01&until=9999-12-31",
        "since=2026-02-30",
    ],
)
def test_the_history_page_drops_filter_values_it_cannot_use(filled, query: str) -> None:
    """Lenient, unlike the API: a hand-edited URL shows every result, and never a 500."""
    _, client, _ = filled
    assert client.get(f"/history?{query}").status_code == 200
    assert _ids(client, query) == [5, 4, 3, 2, 1]


def test_search_is_literal_and_ignores_case_beyond_ascii(filled) -> None:
    """The same answers on SQLite and PostgreSQL: % _ and \\ are found as themselves."""
    app, client, _ = filled
    notes = ["Schädel ÄÖ", "50% smaller", "left_side", "C:\\scans", "leftxside"]
    with app.app_context():
        rows = db.session.scalars(db.select(Prediction).order_by(Prediction.id)).all()
        for p, note in zip(rows, notes, strict=True):
            p.note = note
        db.session.commit()

    def found(q: str) -> list[int]:
        return _ids(client, urlencode({"q": q}))

    assert found("SCHÄDEL") == [1] and found("äö") == [1]
    assert found("%") == [2] and found("0% s") == [2]
    assert found("left_") == [3]  # an underscore is not "any one character"
    assert found("\\") == [4] and found(":\\s") == [4]
    assert found("\x00") == [5, 4, 3, 2, 1]  # a NUL is dropped, and nothing is left to find
    assert found("STRASSE") == [] and found("äö\nleft") == []
    with app.app_context():
        db.session.get(Prediction, 1).note = "Straße"
        db.session.commit()
    assert found("STRASSE") == [1]  # full case folding, both sides
    assert found(f"{names_of(app)[0]}Straße") == []  # no match across the name and the note


def names_of(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(db.select(Prediction.name).order_by(Prediction.id)))


def test_search_finds_a_study_by_any_slice_file_name(make_app, phantom_data) -> None:
    """A study's name shows only its first and last file; the search reads every slice's."""
    app = make_app()
    client = app.test_client()
    files = phantom_slices(phantom_data, 3)
    response = upload(client, files, study=True)
    wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    middle = files[1][1]
    with app.app_context():
        [study] = db.session.scalars(db.select(Prediction)).all()
        assert middle not in study.name
    assert _ids(client, urlencode({"q": middle.upper()})) == [study.id]


def test_csv_times_are_utc(filled) -> None:
    _, client, _ = filled
    text = client.get("/history/export.csv?sort=oldest").get_data(as_text=True)
    first = next(csv.DictReader(io.StringIO(text)))
    assert first["created_at"] == "2026-01-01T00:00:00+00:00"


def test_paging_keeps_the_filters(filled) -> None:
    _, client, _ = filled
    page = client.get("/history?label=Normal").get_data(as_text=True)
    assert "3 results" in page and "page 1 of 2" in page
    assert "page=2&amp;label=Normal" in page or "label=Normal&amp;page=2" in page
    second = client.get("/history?label=Normal&page=2").get_data(as_text=True)
    assert "page 2 of 2" in second and "/predictions/1" in second


def test_fragment_for_htmx_and_full_page_otherwise(filled) -> None:
    _, client, _ = filled
    full = client.get("/history").get_data(as_text=True)
    assert full.startswith("<!doctype html>") and 'id="filters"' in full
    fragment = client.get("/history?label=Stroke", headers={"HX-Request": "true"})
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith('<section id="results"') and 'id="filters"' not in text
    assert "2 results" in text


def test_csv_export_quotes_formulas(filled) -> None:
    _, client, _ = filled
    response = client.get("/history/export.csv?q=HYPERLINK")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 1 and rows[0]["note"] == "'=HYPERLINK(1)"
    assert rows[0]["bundle_name"] == "tiny" and len(rows[0]["content_sha256"]) == 64


def test_empty_history_invites_an_upload(client) -> None:
    page = client.get("/history").get_data(as_text=True)
    assert "0 results" in page and "Upload a slice" in page
