"""A clinician's flows in a real browser: upload, result, overlay, window, history, study."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import HEAT_MAP_LOADED, wait_until
from tests.web.helpers import ct_dicom, phantom_slices

pytestmark = pytest.mark.slow


def _write(folder: Path, files: list[tuple[bytes, str]]) -> list[str]:
    paths = []
    for content, name in files:
        path = folder / name
        path.write_bytes(content)
        paths.append(str(path))
    return paths


def _upload(page, base_url: str, paths: list[str], *, study: bool = False) -> None:
    page.goto(base_url + "/")
    page.set_input_files("#files", paths)
    if study:
        page.check("#study")
    page.click("button[type=submit]")


def test_slice_result_overlay_window_history_note_and_csv(page, base_url, tmp_path) -> None:
    [path] = _write(tmp_path, [(ct_dicom(tmp_path, "src.dcm"), "head-ct.dcm")])
    _upload(page, base_url, [path])
    page.wait_for_url(re.compile(r"/predictions/\d+$"))
    assert "head-ct.dcm" in page.inner_text("h2")
    probability = float(page.inner_text("#slice-probability"))
    assert 0.0 <= probability <= 1.0
    page.wait_for_selector("#faithfulness")  # the heat map was made on demand
    wait_until(page, HEAT_MAP_LOADED)
    page.shots("result-with-overlay")

    page.uncheck("#cam-toggle")
    assert page.is_hidden("#cam-image")
    page.check("#cam-toggle")
    page.focus("#opacity")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#cam-image", "e => e.style.opacity") == "0.5"
    assert page.inner_text("#opacity-value") == "50%"
    page.shots("opacity-50")

    page.evaluate("window.__sameDocument = true")
    page.click("a.window[data-window=bone]")
    page.wait_for_selector("a.window.current[data-window=bone]")
    assert "window=bone" in page.get_attribute("#slice-image", "src")
    assert page.evaluate("window.__sameDocument === true")  # swapped in place, no reload
    page.shots("bone-window")

    page.goto(base_url + "/history")
    page.fill("#q", "head-ct")
    page.wait_for_selector("#results >> text=1 result")
    page.click("#results >> text=head-ct.dcm")
    page.fill("#note", "reviewed on the ward screen")
    page.click("text=Save note")
    page.wait_for_selector("text=note saved")
    page.shots("note-saved")

    page.goto(base_url + "/history?q=ward")
    with page.expect_download() as download:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["name"] for r in rows] == ["head-ct.dcm"]
    assert rows[0]["note"] == "reviewed on the ward screen"
    assert page.outside == []


def test_study_shows_the_strip_and_opens_a_slice(page, base_url, tmp_path, phantom_data) -> None:
    paths = _write(tmp_path, phantom_slices(phantom_data, 3))
    _upload(page, base_url, paths, study=True)
    page.wait_for_url(re.compile(r"/predictions/\d+$"))  # via the job page's polling
    items = page.locator("#strip .strip-item")
    assert items.count() == 3
    page.shots("study-strip")
    items.nth(1).click()
    page.wait_for_selector("#viewer h2 >> text=Slice 2 of 3")
    assert page.url.endswith("slice=1")
    page.shots("study-slice-2")
    assert page.outside == []


def test_a_text_file_named_png_is_refused_and_nothing_stored(page, base_url, tmp_path) -> None:
    page.goto(base_url + "/history")
    before = page.inner_text("#results p")
    [path] = _write(tmp_path, [(b"not an image at all\n", "scan.png")])
    _upload(page, base_url, [path])
    error = page.wait_for_selector("#upload-error")
    assert "not a PNG, JPEG or DICOM" in error.inner_text()
    assert "Nothing was stored" in error.inner_text()
    page.shots("refused")
    page.goto(base_url + "/history")
    assert page.inner_text("#results p") == before


def test_pages_fit_a_tablet_and_keep_the_disclaimer(page, base_url) -> None:
    page.set_viewport_size({"width": 768, "height": 1024})
    for path in ("/", "/history", "/model", "/models"):
        page.goto(base_url + path)
        assert "Not for clinical use" in page.inner_text("footer")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 768, f"{path} scrolls sideways at tablet width ({width} px)"
    page.shots("tablet")


def test_the_upload_button_says_it_is_busy_and_cannot_be_pressed_twice(
    page, base_url, tmp_path
) -> None:
    [path] = _write(tmp_path, [(ct_dicom(tmp_path, "src.dcm"), "busy.dcm")])
    page.goto(base_url + "/")
    page.set_input_files("#files", [path])
    # Press and read in the same turn of the page's script, before the navigation.
    state = page.evaluate(
        """() => {
          const button = document.querySelector("#upload-form button[type=submit]");
          button.click();
          return [button.disabled, button.textContent,
                  document.getElementById("upload-form").getAttribute("aria-busy"),
                  document.getElementById("upload-status").textContent];
        }"""
    )
    assert state[:3] == [True, "Predicting…", "true"] and "predicting" in state[3]
    page.wait_for_url(re.compile(r"/predictions/\d+$"))
    page.go_back()
    page.wait_for_selector("#upload-form")
    assert page.is_enabled("#upload-form button[type=submit]")
