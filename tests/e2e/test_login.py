"""Logins in a real browser (AUTH_REQUIRED on): the form, roles on the pages, logout, and an
htmx request whose session has ended."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from tests.e2e.conftest import make_live_app
from tests.web.helpers import phantom_slices
from webapp.auth import users
from webapp.auth.views import REFUSED

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def live_app(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    app = make_live_app(tiny_bundle, tmp_path_factory.mktemp("login"), AUTH_REQUIRED=True)
    with app.app_context():
        users.create_user("cleo", PASSWORD, "clinician")
        users.create_user("vera", PASSWORD, "viewer")
    return app


def _log_in(page, name: str, password: str = PASSWORD) -> None:
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")


def test_login_goes_back_to_the_page_asked_for_and_logout_ends_it(
    page, base_url, phantom_data, tmp_path
) -> None:
    page.goto(base_url + "/history?label=Stroke")
    assert re.search(r"/login\?next=", page.url)
    assert page.is_visible("#login-form")
    assert not page.is_visible("#account")
    page.shots("login-form")

    _log_in(page, "cleo", "not the password")
    assert page.inner_text("#login-error") == REFUSED
    assert page.input_value("#name") == "cleo"  # kept; the password is not
    assert page.input_value("#password") == ""
    page.shots("refused")

    _log_in(page, "cleo")
    page.wait_for_url(re.compile(r"/history\?label=Stroke$"))
    assert page.inner_text("#account span") == "cleo (clinician)"
    assert page.eval_on_selector("#label", "e => e.value") == "Stroke"
    page.shots("history-after-login")

    [(content, name)] = phantom_slices(phantom_data, 1)
    (tmp_path / name).write_bytes(content)
    page.goto(base_url + "/")
    page.set_input_files("#files", [str(tmp_path / name)])
    page.click("main button[type=submit]")  # not the header's "Log out"
    page.wait_for_url(re.compile(r"/predictions/\d+$"))
    assert page.is_visible("#note")  # a clinician may annotate
    page.shots("clinician-result")

    page.click("#account button[type=submit]")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(base_url + "/")
    assert re.search(r"/login\?next=", page.url)  # the session is gone, not just the page
    assert page.outside == []


def test_a_viewer_sees_results_but_no_upload_form(page, base_url) -> None:
    page.goto(base_url + "/login")
    _log_in(page, "vera")
    page.wait_for_url(base_url + "/")
    assert page.is_visible("#upload-not-allowed")
    assert page.locator("#files").count() == 0
    page.shots("viewer-upload-page")
    page.goto(base_url + "/studio")
    assert page.is_visible("#studio-read-only")
    page.shots("viewer-studio")


def test_an_htmx_request_after_the_session_ended_lands_on_the_login_form(page, base_url) -> None:
    page.goto(base_url + "/login")
    _log_in(page, "cleo")
    page.wait_for_url(base_url + "/")
    page.goto(base_url + "/history")
    page.context.clear_cookies()  # as when the session expires or the user is disabled
    page.select_option("#label", "Normal")  # htmx asks for the results fragment
    # The page the request came from (HX-Current-URL), not the fragment's own address.
    page.wait_for_url(re.compile(r"/login\?next=(/|%2F)history$"))
    assert page.is_visible("#login-form")
    assert page.locator("#results").count() == 0  # no login page swapped into the list
    page.shots("htmx-to-login")
