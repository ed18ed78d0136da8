"""What must hold alike on SQLite and PostgreSQL: the migrations, times in UTC, and the values
PostgreSQL refuses where SQLite takes them (NUL characters, ids beyond its INTEGER)."""

from __future__ import annotations

import io
from datetime import timedelta

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from ml.bundle import load_bundle
from tests.web.helpers import BOTH_DATABASES, change, phantom_slices, upload, wait_for_job
from tests.web.test_api import API, assert_error, bearer, make_token
from webapp.extensions import db
from webapp.models import AuditEvent, Prediction

pytestmark = BOTH_DATABASES


def test_migrations_go_down_to_nothing_and_up_again(app) -> None:
    with app.app_context():
        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
    assert {"bundles", "jobs", "predictions", "prediction_slices", "audit_events"} <= tables


def test_the_search_migration_fills_the_search_text_of_existing_results(app, phantom_data) -> None:
    """Results stored before 0007 are found by name, note and slice file name after it."""
    client = app.test_client()
    response = upload(client, phantom_slices(phantom_data, 2), study=True)
    wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    with app.app_context():
        [study] = db.session.scalars(db.select(Prediction)).all()
        study.note = "Schädel"
        db.session.commit()
        slice_names = [s.original_name for s in study.slices]
        db.session.close()  # PostgreSQL: a read left open would block the ALTER TABLE
        downgrade(revision="0006_job_heartbeat")
        assert "search_text" not in _columns("predictions")
        upgrade()
        db.session.expire_all()
        assert db.session.get(Prediction, study.id).search_text.split("\n")[1:] == [
            "schädel",
            *(name.casefold() for name in slice_names),
        ]
        db.session.close()
    for q in ("SCHÄDEL", slice_names[-1]):
        text = client.get("/history/export.csv", query_string={"q": q}).get_data(as_text=True)
        assert len(text.strip().splitlines()) == 2, q  # the header and the study


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(db.engine).get_columns(table)}


def test_times_come_back_in_utc(make_app, monkeypatch) -> None:
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # a PostgreSQL session would answer in this zone
    app = make_app()
    with app.app_context():
        db.session.add(AuditEvent(actor="test", action="note", target="x", detail={}))
        db.session.commit()
        at = db.session.scalars(sa.select(AuditEvent.at)).one()
    assert at.utcoffset() in (None, timedelta(0))  # SQLite's are naive, and stored in UTC


def test_ids_and_names_no_row_can_have_are_404(client) -> None:
    """Beyond PostgreSQL's INTEGER, or holding NUL: 404, never a database error."""
    for url in (
        "/predictions/2147483648",
        f"/predictions/{10**30}",
        "/predictions/1/slices/2147483648/image.png",
        "/jobs/%00",
        "/models/%00",
        f"{API}/predictions/2147483648",
    ):
        assert client.get(url).status_code == 404, url


def test_nul_characters_are_dropped_from_file_names_and_notes(app, client, phantom_data) -> None:
    content, _ = phantom_slices(phantom_data, 1)[0]
    job = upload(client, [(content, "scan\x00one.png")]).headers["Location"]
    result = client.get(job).headers["Location"]
    change(client, result, "note", {"note": "seen\x00twice"})
    with app.app_context():
        found = db.session.scalars(sa.select(Prediction)).one()
        assert (found.name, found.slices[0].original_name) == ("scanone.png", "scanone.png")
        assert found.note == "seentwice"


def test_nul_characters_in_operating_point_names(app, client, bundle_dir) -> None:
    auth = bearer(make_token(app, "read", "write"))
    url = f"{API}/models/{load_bundle(bundle_dir / 'tiny').id}/operating-points"
    body = {"name": "scr\x00een", "threshold": 0.5, "level": "slice"}
    saved = client.post(url, json=body, headers=auth)
    assert saved.status_code == 201 and saved.get_json()["name"] == "screen"
    form = {"files": [(io.BytesIO(b"unread"), "x.png")], "operating_point": "scr\x00een"}
    refused = client.post(f"{API}/predict", data=form, headers=auth)
    assert_error(refused, 400, "no slice operating point")
