"""The reported story, in a browser, on SQLite and on PostgreSQL: a result is deleted while a page
of it is still open, another patient's slice is uploaded, and the old page tries to save a note.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import Screenshots, live_server, make_live_app
from tests.web.helpers import BOTH_DATABASES, phantom_slices

pytestmark = [pytest.mark.slow, BOTH_DATABASES]
RESULT = re.compile(r"/predictions/(\d+)$")


def _upload(page, base_url: str, path: Path) -> int:
    page.goto(base_url + "/")
    page.set_input_files("#files", [str(path)])
    page.click("button[type=submit]")
    page.wait_for_url(RESULT)
    return int(RESULT.search(page.url).group(1))


def test_a_page_left_open_on_a_deleted_result_changes_nothing(
    browser, database, tiny_bundle, phantom_data, tmp_path, request
) -> None:
    app = make_live_app(tiny_bundle, tmp_path / "live", SQLALCHEMY_DATABASE_URI=database.url)
    database.apps.append(app)
    paths = []
    for content, name in phantom_slices(phantom_data, 2):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(content)
    with live_server(app) as base_url:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        ward, office = context.new_page(), context.new_page()
        shots = Screenshots(ward, request.node.name)
        first = _upload(ward, base_url, paths[0])
        office.goto(f"{base_url}/predictions/{first}")  # a second tab, left open on it

        ward.once("dialog", lambda dialog: dialog.accept())  # "Delete result …?"
        ward.click("text=Delete this result")
        ward.wait_for_url(re.compile(r"/history"))
        assert f"Result {first} was deleted" in ward.inner_text("main")
        second = _upload(ward, base_url, paths[1])
        assert second > first  # the number of a deleted result is never given again
        shots("second-result")

        for _ in range(6):  # Back, to the deleted result's page
            if ward.url.endswith(f"/predictions/{first}"):
                break
            ward.go_back()
        assert ward.url.endswith(f"/predictions/{first}")
        assert f"Result {first} was deleted" in ward.inner_text("main")
        shots("back-on-the-deleted-result")

        office.fill("#note", "bleed, left parietal")
        office.click("text=Save note")
        problem = office.wait_for_selector(".htmx-problem")
        text = problem.inner_text()
        assert f"Result {first} was deleted" in text and "your note was not saved" in text
        Screenshots(office, request.node.name + "-office")("note-refused")

        ward.goto(f"{base_url}/predictions/{second}")
        assert ward.input_value("#note") == ""  # the other patient's result is untouched
        context.close()
