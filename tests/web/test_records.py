"""A result is never confused with another: numbers are not reused, and every change a page makes
names the result (and the state of it) the page showed. On SQLite and on PostgreSQL."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask import Flask
from flask_migrate import downgrade, upgrade

from tests.web.helpers import (
    BOTH_DATABASES,
    change,
    page_record,
    phantom_slices,
    post,
    stored_files,
    upload,
    wait_for_job,
)
from tests.web.test_api import API, assert_error, bearer, make_token
from webapp.extensions import db
from webapp.models import AuditEvent, Prediction

pytestmark = BOTH_DATABASES


def _result(client, content: bytes, name: str) -> str:
    """Upload one slice; the URL of its result."""
    return client.get(upload(client, [(content, name)]).headers["Location"]).headers["Location"]


def _number(url: str) -> int:
    return int(url.rsplit("/", 1)[-1])


def _notes(app: Flask) -> dict[int, str]:
    with app.app_context():
        return dict(db.session.execute(sa.select(Prediction.id, Prediction.note)).all())


def test_deleting_the_newest_result_never_frees_its_number(app, client, phantom_data) -> None:
    (a, name_a), (b, name_b) = phantom_slices(phantom_data, 2)
    first = _result(client, a, name_a)
    assert change(client, first, "delete", {}).status_code == 303
    second = _result(client, b, name_b)
    assert _number(second) > _number(first)
    gone = client.get(first)
    assert gone.status_code == 410
    assert f"Result {_number(first)} was deleted" in gone.get_data(as_text=True)


def test_a_page_left_open_on_a_deleted_result_cannot_touch_the_next_one(
    app, client, phantom_data
) -> None:
    """The reported story: delete #N, go Back to its page, save a note there."""
    (a, name_a), (b, name_b) = phantom_slices(phantom_data, 2)
    first = _result(client, a, name_a)
    stale_form = page_record(client, first)  # what the cached page still holds
    change(client, first, "delete", {})
    second = _result(client, b, name_b)
    for action, data in (("note", {"note": "bleed, left"}), ("review", {"review": "agree"})):
        refused = post(client, f"{first}/{action}", {**stale_form, **data})
        assert refused.status_code == 410, action
        text = refused.get_data(as_text=True)
        assert f"Result {_number(first)} was deleted" in text and "not saved" in text
    assert _notes(app) == {_number(second): ""}


def test_a_form_of_another_result_is_refused(app, client, phantom_data) -> None:
    (a, name_a), (b, name_b) = phantom_slices(phantom_data, 2)
    first, second = _result(client, a, name_a), _result(client, b, name_b)
    form_of_first = page_record(client, first)
    for action in ("note", "review", "delete"):
        refused = post(client, f"{second}/{action}", {**form_of_first, "note": "x"})
        assert refused.status_code == 409, action
        assert "not the result this page was made for" in refused.get_data(as_text=True)
    unnamed = post(client, f"{second}/note", {"note": "x"})
    assert unnamed.status_code == 400 and "which result" in unnamed.get_data(as_text=True)
    assert _notes(app) == {_number(first): "", _number(second): ""}


def test_an_edit_made_meanwhile_is_not_overwritten(app, client, phantom_data) -> None:
    """Two readers open the same result; the second to save learns of the first's note."""
    content, name = phantom_slices(phantom_data, 1)[0]
    url = _result(client, content, name)
    first_reader, second_reader = page_record(client, url), page_record(client, url)
    assert post(client, f"{url}/note", {**first_reader, "note": "mine"}).status_code == 303
    refused = post(client, f"{url}/note", {**second_reader, "note": "theirs"})
    assert refused.status_code == 409
    assert "changed after this page was loaded" in refused.get_data(as_text=True)
    assert _notes(app) == {_number(url): "mine"}
    again = page_record(client, url)  # reloaded: the next version, and the save goes through
    assert int(again["version"]) == int(first_reader["version"]) + 1
    assert post(client, f"{url}/note", {**again, "note": "theirs"}).status_code == 303
    assert _notes(app) == {_number(url): "theirs"}


def test_the_audit_log_names_each_result_it_touched(app, client, phantom_data) -> None:
    content, name = phantom_slices(phantom_data, 1)[0]
    url = _result(client, content, name)
    record = page_record(client, url)["record"]
    change(client, url, "note", {"note": "seen"})
    change(client, url, "review", {"review": "agree"})
    change(client, url, "delete", {})
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()
        named = [(e.action, e.target, e.detail.get("record")) for e in rows[1:]]
    target = f"prediction {_number(url)}"
    assert named == [(action, target, record) for action in ("predict", "note", "review", "delete")]


def test_a_deleted_result_is_410_in_the_api_too(app, client, phantom_data) -> None:
    auth = bearer(make_token(app, "read", "write"))
    content, name = phantom_slices(phantom_data, 1)[0]
    url = _result(client, content, name)
    api_url = f"{API}/predictions/{_number(url)}"
    body = client.get(api_url, headers=auth).get_json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["public_id"]) and body["version"] == 1
    assert client.delete(api_url, headers=auth).status_code == 204
    assert_error(client.get(api_url, headers=auth), 410, "was deleted")
    assert_error(client.delete(api_url, headers=auth), 410, "was deleted")
    assert_error(client.get(f"{API}/predictions/{_number(url) + 1}", headers=auth), 404)


def test_deleting_a_result_while_its_heat_map_is_made_ends_cleanly(
    app, client, phantom_data, monkeypatch
) -> None:
    """The delete lands between the start and the end of the computation: 410, nothing kept."""
    from ml.infer.predictor import Predictor
    from webapp.predict.service import delete_prediction

    content, name = phantom_slices(phantom_data, 1)[0]
    url = _result(client, content, name)
    record = page_record(client, url)["record"]
    explain = Predictor.explain

    def explain_while_deleted(self, *args, **kwargs):
        made = explain(self, *args, **kwargs)
        with app.app_context():  # another request, on its own session and connection
            delete_prediction(db.session.get(Prediction, _number(url)))
        return made

    monkeypatch.setattr(Predictor, "explain", explain_while_deleted)
    hx = {"HX-Request": "true"}
    response = client.get(f"{url}/slices/0/cam?record={record}", headers=hx)
    assert response.status_code == 410
    assert "deleted while its heat map was being made" in response.get_data(as_text=True)
    assert stored_files(app) == []  # neither the upload nor a heat map stayed behind
    assert client.get(url).status_code == 410


def test_the_migration_keeps_slices_and_counts_past_deleted_numbers(app, phantom_data) -> None:
    """A database from before 0008: its slices survive the rebuild, every result gets a public
    id, and a number the audit log says was deleted is not given again."""
    client = app.test_client()
    response = upload(client, phantom_slices(phantom_data, 3), study=True)
    wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    content, name = phantom_slices(phantom_data, 1)[0]
    newest = _result(client, content, name)
    change(client, newest, "delete", {})
    with app.app_context():
        [study] = db.session.scalars(sa.select(Prediction)).all()
        study_id, slices = study.id, [s.stored_name for s in study.slices]
        db.session.close()  # PostgreSQL: a read left open would block the ALTER TABLE
        downgrade(revision="0007_history_search")
        _forget_the_id_counter(study_id)  # as before 0008: nothing remembers the deleted number
        upgrade()
        db.session.expire_all()
        kept = db.session.get(Prediction, study_id)
        assert [s.stored_name for s in kept.slices] == slices
        assert re.fullmatch(r"[0-9a-f]{32}", kept.public_id) and kept.version == 1
        db.session.close()
    again = _result(client, content, name)
    assert _number(again) > _number(newest)


def _forget_the_id_counter(highest: int) -> None:
    if db.engine.dialect.name == "sqlite":
        db.session.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'predictions'"))
    else:
        db.session.execute(
            sa.text("SELECT setval(pg_get_serial_sequence('predictions', 'id'), :n)"),
            {"n": highest},
        )
    db.session.commit()
