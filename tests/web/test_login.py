"""Login and roles of the browser pages (AUTH_REQUIRED on): who may see and change what."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import check_password_hash

from ml.bundle import load_bundle
from ml.metrics.thresholds import read_thresholds
from tests.web.helpers import (
    BOTH_DATABASES,
    count_predictions,
    phantom_slices,
    post,
    stored_files,
    upload,
)
from webapp.auth import users
from webapp.extensions import db
from webapp.models import AuditEvent, Job, LoginFailure, OperatingPointRecord, Prediction, User

PASSWORD = "correct horse battery"
NAMES = {"viewer": "vera", "clinician": "cleo", "researcher": "rosa"}


@pytest.fixture
def auth_app(make_app) -> Flask:
    """AUTH_REQUIRED on, with one user of each role (all with PASSWORD)."""
    app = make_app(AUTH_REQUIRED=True)
    with app.app_context():
        for role, name in NAMES.items():
            users.create_user(name, PASSWORD, role)
    return app


@pytest.fixture
def anon(auth_app: Flask) -> FlaskClient:
    return auth_app.test_client()


def _form_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def login(client: FlaskClient, name: str, password: str = PASSWORD, **kw):
    token = _form_token(client.get("/login").get_data(as_text=True))
    data = {"csrf_token": token, "name": name, "password": password}
    if "next" in kw:
        data["next"] = kw.pop("next")
    return client.post("/login", data=data, **kw)


def client_for(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    response = login(client, NAMES[role])
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


def _logged_in(client: FlaskClient) -> bool:
    return client.get("/history").status_code == 200


def _events(app: Flask) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()
        return [(e.actor, e.action, e.target) for e in rows]


# --- who gets in -----------------------------------------------------------------------------


def test_pages_redirect_to_login_with_the_page_as_next(anon: FlaskClient) -> None:
    for path in ("/", "/history", "/studio", "/model", "/models", "/predictions/1"):
        response = anon.get(path)
        assert response.status_code == 303, path
        assert urlsplit(response.headers["Location"]).path == "/login", path
    response = anon.get("/history?label=Stroke&page=2")
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["next"] == ["/history?label=Stroke&page=2"]
    assert anon.get("/login").status_code == 200
    with anon.get("/static/style.css") as static:
        assert static.status_code == 200


def test_a_post_without_login_changes_nothing(auth_app: Flask, anon: FlaskClient) -> None:
    token = _form_token(anon.get("/login").get_data(as_text=True))
    response = anon.post("/predictions/1/note", data={"csrf_token": token, "note": "x"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"  # no next: a POST cannot be replayed
    assert _events(auth_app) == [("cli", "user", f"user {n}") for n in NAMES.values()]


def test_htmx_requests_get_401_and_hx_redirect(anon: FlaskClient) -> None:
    headers = {"HX-Request": "true", "HX-Current-URL": "http://localhost/history?label=Stroke"}
    response = anon.get("/history?page=2", headers=headers)
    assert response.status_code == 401
    assert "Location" not in response.headers
    target = urlsplit(response.headers["HX-Redirect"])
    assert target.path == "/login"
    assert parse_qs(target.query)["next"] == ["/history?label=Stroke"]
    off_site = {"HX-Request": "true", "HX-Current-URL": "https://evil.example//evil.example/x"}
    response = anon.get("/history", headers=off_site)
    assert response.status_code == 401 and "evil" not in response.headers["HX-Redirect"]


def test_the_api_keeps_its_tokens(anon: FlaskClient) -> None:
    assert anon.get("/api/v1/health").status_code == 200
    response = anon.get("/api/v1/predictions")
    assert response.status_code == 401 and response.is_json  # a token error, not a redirect
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_login_goes_to_a_local_next(anon: FlaskClient) -> None:
    response = login(anon, "vera", next="/history?label=Stroke")
    assert response.status_code == 303
    assert response.headers["Location"] == "/history?label=Stroke"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example",
        "https://evil.example/history",
        "//evil.example/history",
        "/\\evil.example",
        "javascript:alert(1)",
        "history",
        "/history\r\nSet-Cookie: x=1",
    ],
)
def test_login_never_redirects_off_site(anon: FlaskClient, target: str) -> None:
    page = anon.get("/login", query_string={"next": target}).get_data(as_text=True)
    assert 'name="next"' not in page
    response = login(anon, "vera", next=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_a_logged_in_user_visiting_login_goes_on(anon: FlaskClient) -> None:
    login(anon, "vera")
    response = anon.get("/login?next=https://evil.example")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert anon.get("/login?next=/models").headers["Location"] == "/models"


def test_wrong_password_and_unknown_name_get_the_same_answer(auth_app, anon) -> None:
    wrong = login(anon, "vera", "not the password at all")
    unknown = login(anon, "nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    message = 'id="login-error">Wrong user name or password, or the account is disabled.<'
    assert message in wrong.get_data(as_text=True)
    assert message in unknown.get_data(as_text=True)
    assert not _logged_in(anon)
    failed = [e for e in _events(auth_app) if e[1] == "login_failed"]
    assert failed == [
        ("browser", "login_failed", "user vera"),
        ("browser", "login_failed", "user nobody"),
    ]


def test_login_starts_a_fresh_session(auth_app: Flask, anon: FlaskClient) -> None:
    with anon.session_transaction() as session:
        session["planted"] = "by someone else"
    login(anon, "cleo")
    with anon.session_transaction() as session:
        assert "planted" not in session
        with auth_app.app_context():
            assert session["user_id"] == users.find("cleo").id
    with auth_app.app_context():
        assert users.find("cleo").last_login_at is not None
    stranger = auth_app.test_client()
    with stranger.session_transaction() as session:
        session["user_id"] = 999  # no such user: this logs nobody in
    assert not _logged_in(stranger)


@BOTH_DATABASES
def test_logout_is_a_post_with_csrf(auth_app: Flask, anon: FlaskClient) -> None:
    login(anon, "vera")
    assert anon.get("/logout").status_code == 405
    assert anon.post("/logout").status_code == 400  # no CSRF token: refused
    assert _logged_in(anon)
    page = anon.get("/history").get_data(as_text=True)
    assert 'id="account"' in page and "vera (viewer)" in page
    response = anon.post("/logout", data={"csrf_token": _form_token(page)})
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert not _logged_in(anon)
    actions = [(actor, action) for actor, action, _ in _events(auth_app)][3:]
    assert actions == [("vera", "login"), ("vera", "logout")]


@BOTH_DATABASES
def test_failed_logins_are_rate_limited_per_name_and_address(auth_app, anon) -> None:
    for _ in range(5):
        assert login(anon, "cleo", "guess guess guess").status_code == 401
    response = login(anon, "cleo", PASSWORD)  # right, but too late
    assert response.status_code == 429
    assert "Too many failed logins" in response.get_data(as_text=True)
    assert not _logged_in(anon)
    # Another address, or another name from this one, is not locked out by these failures.
    elsewhere = auth_app.test_client()
    assert login(elsewhere, "cleo", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 303
    assert login(auth_app.test_client(), "vera").status_code == 303
    # Once the failures are older than the window, the name may try again from here.
    with auth_app.app_context():
        for failure in db.session.scalars(sa.select(LoginFailure)):
            failure.at -= timedelta(minutes=16)
        db.session.commit()
    assert login(anon, "cleo", PASSWORD).status_code == 303


def test_one_address_trying_many_names_is_stopped(make_app) -> None:
    app = make_app(AUTH_REQUIRED=True, LOGIN_MAX_FAILURES=2)
    with app.app_context():
        users.create_user("cleo", PASSWORD, "clinician")
    client = app.test_client()
    for number in range(2 * users.ADDRESS_FACTOR):
        assert login(client, f"guess{number}", PASSWORD).status_code == 401
    assert login(client, "cleo", PASSWORD).status_code == 429


def test_a_disabled_user_is_logged_out_and_cannot_log_in(auth_app: Flask) -> None:
    client = client_for(auth_app, "clinician")
    result = auth_app.test_cli_runner().invoke(args=["users", "disable", "cleo"])
    assert result.exit_code == 0, result.output
    assert not _logged_in(client)
    response = login(client, "cleo")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.get_data(as_text=True)


# --- passwords and the CLI -------------------------------------------------------------------


@BOTH_DATABASES
def test_passwords_are_stored_only_as_a_salted_hash(auth_app: Flask) -> None:
    with auth_app.app_context():
        stored = [u.password_hash for u in db.session.scalars(sa.select(User))]
        assert all(h.startswith("scrypt:") and PASSWORD not in h for h in stored)
        assert len(set(stored)) == len(stored)  # same password, different salts
        assert all(check_password_hash(h, PASSWORD) for h in stored)
        rows = [
            db.session.execute(sa.text(f"select * from {table}")).all()
            for table in ("users", "audit_events", "login_failures")
        ]
    assert PASSWORD not in repr(rows)


@BOTH_DATABASES
def test_cli_create_list_set_role_disable(auth_app: Flask) -> None:
    runner = auth_app.test_cli_runner()
    secret = "a long enough secret"
    made = runner.invoke(
        args=["users", "create", "tess", "--role", "researcher", "--password-stdin"],
        input=f"{secret}\n",
    )
    assert made.exit_code == 0, made.output
    prompted = runner.invoke(
        args=["users", "create", "uma", "--role", "viewer"], input=f"{secret}\n{secret}\n"
    )
    assert prompted.exit_code == 0, prompted.output
    assert secret not in prompted.output  # the prompt is hidden
    listed = runner.invoke(args=["users", "list"]).output
    assert re.search(r"\ttess\tresearcher\t", listed) and re.search(r"\tuma\tviewer\t", listed)
    assert secret not in listed and "scrypt" not in listed
    assert login(auth_app.test_client(), "tess", secret).status_code == 303

    assert runner.invoke(args=["users", "set-role", "uma", "clinician"]).exit_code == 0
    assert runner.invoke(args=["users", "disable", "tess"]).exit_code == 0
    listed = runner.invoke(args=["users", "list"]).output
    assert re.search(r"\tuma\tclinician\t", listed)
    disabled_at = r"\d{4}-\d\d-\d\dT[\d:]+(\+00:00)?"  # PostgreSQL gives the zone, SQLite not
    assert re.search(rf"\ttess\tresearcher\t.*\t{disabled_at}$", listed, re.M)
    assert login(auth_app.test_client(), "tess", secret).status_code == 401
    assert runner.invoke(args=["users", "enable", "tess"]).exit_code == 0
    assert login(auth_app.test_client(), "tess", secret).status_code == 303
    with auth_app.app_context():
        details = [e.detail for e in db.session.scalars(sa.select(AuditEvent))]
    assert secret not in repr(details)


@pytest.mark.parametrize(
    ("args", "stdin", "complaint"),
    [
        (["zed", "--role", "viewer"], "short\n", "at least 12 characters"),
        (["zed", "--role", "viewer"], f"{PASSWORD}\nanother password\n", "do not match"),
        (["vera", "--role", "viewer"], f"{PASSWORD}\n", "already"),
        (["cli", "--role", "viewer"], f"{PASSWORD}\n", "user name"),
        (["a b", "--role", "viewer"], f"{PASSWORD}\n", "user name"),
        (["zed", "--role", "admin"], f"{PASSWORD}\n", "admin"),
    ],
)
def test_cli_refuses_bad_users(auth_app: Flask, args, stdin, complaint) -> None:
    if complaint not in ("do not match",):
        args = [*args, "--password-stdin"]
    result = auth_app.test_cli_runner().invoke(args=["users", "create", *args], input=stdin)
    assert result.exit_code != 0
    assert complaint in result.output
    with auth_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(User.id))) == len(NAMES)


def test_set_role_applies_at_the_next_request(auth_app: Flask, phantom_data) -> None:
    client = client_for(auth_app, "viewer")
    content, name = phantom_slices(phantom_data, 1)[0]
    assert upload(client, [(content, name)]).status_code == 403
    auth_app.test_cli_runner().invoke(args=["users", "set-role", "vera", "clinician"])
    assert upload(client, [(content, name)]).status_code == 303


# --- what each role may do -------------------------------------------------------------------


ALLOWED = {
    "viewer": set(),
    "clinician": {"upload", "note", "review", "delete"},
    "researcher": {"save_point", "delete_point", "activate_point"},
}


def _state(app: Flask, prediction_id: int) -> dict[str, object]:
    """Everything the actions below could change."""
    with app.app_context():
        p = db.session.get(Prediction, prediction_id)
        points = db.session.scalars(sa.select(OperatingPointRecord)).all()
        return {
            "predictions": count_predictions(app),
            "jobs": db.session.scalar(sa.select(sa.func.count(Job.id))),
            "files": stored_files(app),
            "annotation": p and (p.note, p.review, p.true_label),
            "points": sorted((r.name, r.active, r.created_by) for r in points),
            "audit": db.session.scalar(sa.select(sa.func.count(AuditEvent.id))),
        }


def _record(app: Flask, prediction_id: int) -> dict[str, str]:
    """What the result page's forms send to name the result; read when the request is made."""
    with app.app_context():
        found = db.session.get(Prediction, prediction_id)
        if found is None:
            return {}
        return {"record": found.public_id, "version": str(found.version)}


def _actions(app: Flask, phantom_data, bundle_dir, prediction_id: int):
    """Each refusable browser action as (name, request), in an order that keeps them valid."""
    bundle = load_bundle(bundle_dir / "tiny")
    own, active_name = read_thresholds(bundle.path / "thresholds.json")
    other = next(p.name for p in own if p.name != active_name)
    content, name = phantom_slices(phantom_data, 2)[1]
    result = f"/predictions/{prediction_id}"

    def on_result() -> dict[str, str]:
        return _record(app, prediction_id)

    return [
        ("upload", lambda c: upload(c, [(content, name)])),
        ("note", lambda c: post(c, f"{result}/note", {**on_result(), "note": "seen by me"})),
        ("review", lambda c: post(c, f"{result}/review", {**on_result(), "review": "disagree"})),
        (
            "save_point",
            lambda c: post(
                c,
                f"/studio/{bundle.id}/points",
                {"level": "slice", "threshold": "0.4", "name": "mine", "created_by": "mallory"},
            ),
        ),
        (
            "delete_point",
            lambda c: post(
                c, f"/studio/{bundle.id}/points/delete", {"level": "slice", "name": "mine"}
            ),
        ),
        (
            "activate_point",
            lambda c: post(
                c,
                f"/studio/{bundle.id}/points/activate",
                {"level": "slice", "name": other, "confirmed": "yes"},
            ),
        ),
        ("delete", lambda c: post(c, f"{result}/delete", on_result())),
    ]


def _existing_prediction(app: Flask, phantom_data) -> int:
    clinician = client_for(app, "clinician")
    response = upload(clinician, phantom_slices(phantom_data, 1))
    location = clinician.get(response.headers["Location"]).headers["Location"]
    return int(location.rsplit("/", 1)[-1])


@pytest.mark.parametrize("role", list(ALLOWED))
def test_each_role_may_do_its_actions_and_no_others(
    auth_app: Flask, phantom_data, bundle_dir, role: str
) -> None:
    prediction_id = _existing_prediction(auth_app, phantom_data)
    client = client_for(auth_app, role)
    for action, send in _actions(auth_app, phantom_data, bundle_dir, prediction_id):
        before = _state(auth_app, prediction_id)
        response = send(client)
        after = _state(auth_app, prediction_id)
        if action in ALLOWED[role]:
            assert response.status_code == 303, (role, action)
            assert after != before, (role, action)
            # One row in the same commit; an upload also names the result it made.
            assert after["audit"] == before["audit"] + (2 if action == "upload" else 1)
        else:
            assert response.status_code == 403, (role, action)
            assert "Your role" in response.get_data(as_text=True)
            assert after == before, (role, action)  # nothing stored, changed or logged


def test_refusals_under_htmx_are_403_too(auth_app: Flask, phantom_data) -> None:
    prediction_id = _existing_prediction(auth_app, phantom_data)
    client = client_for(auth_app, "researcher")
    before = _state(auth_app, prediction_id)
    hx = {"HX-Request": "true"}
    result = f"/predictions/{prediction_id}"
    assert post(client, f"{result}/note", {"note": "x"}, headers=hx).status_code == 403
    assert post(client, f"{result}/delete", {}, headers=hx).status_code == 403
    assert client.get(f"/predictions/{prediction_id}/delete").status_code == 403
    assert _state(auth_app, prediction_id) == before


def test_viewers_see_every_page_but_no_buttons(auth_app: Flask, phantom_data, bundle_dir) -> None:
    prediction_id = _existing_prediction(auth_app, phantom_data)
    bundle = load_bundle(bundle_dir / "tiny")
    viewer = client_for(auth_app, "viewer")
    pages = {path: viewer.get(path) for path in (
        "/", "/history", "/history/export.csv", f"/predictions/{prediction_id}",
        f"/studio/{bundle.id}", f"/studio/{bundle.id}/data.json", "/model", "/models",
    )}  # fmt: skip
    assert {path: r.status_code for path, r in pages.items()} == dict.fromkeys(pages, 200)
    home = pages["/"].get_data(as_text=True)
    assert 'id="upload-form"' not in home and 'id="upload-not-allowed"' in home
    result = pages[f"/predictions/{prediction_id}"].get_data(as_text=True)
    assert "Save note" not in result and "Delete this result" not in result
    assert 'id="note-read-only"' in result
    studio = pages[f"/studio/{bundle.id}"].get_data(as_text=True)
    assert 'id="save-form"' not in studio and "make active" not in studio
    assert 'id="studio-read-only"' in studio

    clinician = client_for(auth_app, "clinician")
    result = clinician.get(f"/predictions/{prediction_id}").get_data(as_text=True)
    assert "Save note" in result and "Delete this result" in result
    studio = clinician.get(f"/studio/{bundle.id}").get_data(as_text=True)
    assert 'id="save-form"' not in studio
    researcher = client_for(auth_app, "researcher")
    studio = researcher.get(f"/studio/{bundle.id}").get_data(as_text=True)
    assert 'id="save-form"' in studio and "make active" in studio
    assert 'id="created-by"' not in studio and "saved as rosa" in studio
    assert 'id="upload-form"' not in researcher.get("/").get_data(as_text=True)


def test_a_post_no_role_was_granted_is_refused(make_app) -> None:
    """A form added later without @permission is closed by default, not open to everyone."""
    app = make_app(AUTH_REQUIRED=True)
    app.add_url_rule("/unmarked", "unmarked", lambda: "changed", methods=["POST"])
    with app.app_context():
        users.create_user("cleo", PASSWORD, "clinician")
    client = app.test_client()
    login(client, "cleo")
    assert post(client, "/unmarked", {}).status_code == 403


# --- the audit log names the user ------------------------------------------------------------


@BOTH_DATABASES
def test_the_audit_log_names_the_logged_in_user(auth_app, phantom_data, bundle_dir) -> None:
    prediction_id = _existing_prediction(auth_app, phantom_data)
    actions = dict(_actions(auth_app, phantom_data, bundle_dir, prediction_id))
    clinician, researcher = client_for(auth_app, "clinician"), client_for(auth_app, "researcher")
    for name in ("note", "review"):
        actions[name](clinician)
    actions["save_point"](researcher)
    actions["delete"](clinician)
    logged = [(actor, action) for actor, action, _ in _events(auth_app)]
    assert logged[3:] == [
        ("cleo", "login"),
        ("cleo", "upload"),
        ("cleo", "predict"),
        ("cleo", "login"),
        ("rosa", "login"),
        ("cleo", "note"),
        ("cleo", "review"),
        ("rosa", "operating_point"),
        ("cleo", "delete"),
    ]
    with auth_app.app_context():
        saved = db.session.scalar(sa.select(OperatingPointRecord))
        assert saved.created_by == "rosa"  # not the "mallory" typed into the form
    shown = auth_app.test_cli_runner().invoke(args=["audit", "show"]).output
    assert "\trosa\toperating_point\t" in shown


# --- with AUTH_REQUIRED off nothing changes --------------------------------------------------


def test_without_auth_required_there_is_no_login(app: Flask, client: FlaskClient) -> None:
    assert app.config["AUTH_REQUIRED"] is False
    assert client.get("/login").status_code == 404
    page = client.get("/").get_data(as_text=True)
    assert 'id="upload-form"' in page and 'id="account"' not in page
