"""The result viewer in a real browser: heat maps made once and never waited on for ever, a study
opened where it matters, a strip that fits a laptop, settings that survive a click, long names."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import HEAT_MAP_LOADED, result_url, wait_until
from tests.web.helpers import count_explains, ct_dicom, phantom_slices
from webapp.extensions import db
from webapp.models import Prediction
from webapp.results import viewer

pytestmark = pytest.mark.slow

LAPTOPS = ({"width": 1280, "height": 800}, {"width": 1366, "height": 768})


def number(url: str) -> int:
    return int(url.rsplit("/", 1)[-1])


def shows_heat_map(page) -> bool:
    return page.evaluate(
        "() => { const cam = document.getElementById('cam-image');"
        " return !!cam && !cam.hidden && cam.complete && cam.naturalWidth > 0"
        " && !!document.getElementById('faithfulness'); }"
    )


def test_two_first_views_make_the_heat_map_once_and_both_show_it(
    page, browser, base_url, live_app, phantom_data, monkeypatch
) -> None:
    path = result_url(live_app, phantom_slices(phantom_data, 1))
    calls = count_explains(monkeypatch, delay=3.0)
    images: list[int] = []  # the status of every heat-map image a page asked for
    fragments: list[str] = []  # the first page's requests of the heat-map fragment
    second = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    for each in (page, second):
        each.on("response", lambda r: images.append(r.status) if "/cam.png" in r.url else None)
    page.on("request", lambda r: fragments.append(r.url) if "/cam?" in r.url else None)
    try:
        began = time.monotonic()
        page.goto(base_url + path)
        second.goto(base_url + path)
        page.focus("#opacity")
        page.keyboard.press("ArrowRight")  # while the map is being made: 0.40 -> 0.45
        for each in (page, second):
            wait_until(each, "() => !!document.getElementById('faithfulness')", timeout=60)
            wait_until(each, HEAT_MAP_LOADED)
        both_s = time.monotonic() - began
        assert len(calls) == 1, f"the heat map was made {len(calls)} times"
        for each in (page, second):
            assert shows_heat_map(each)
            assert each.locator(".problem").count() == 0
        assert images == [200, 200]  # each page asked for the image once, once it existed
        assert len(fragments) == 1  # moving the slider did not ask again
        assert page.eval_on_selector("#cam-image", "e => e.style.opacity") == "0.45"
        assert both_s < 3.0 + 2 * viewer.POLL_S + 15  # the second page polled, it did not wait
        page.shots("first-of-two-views")
        second.screenshot(path=str(page.shots.folder / "second-of-two-views.png"))
        print(f"two first views: both showed the heat map after {both_s:.1f} s, 1 made")
    finally:
        second.context.close()


def test_a_heat_map_image_that_fails_to_load_says_so_with_a_retry(
    page, base_url, live_app, phantom_data
) -> None:
    path = result_url(live_app, phantom_slices(phantom_data, 1))
    page.route("**/cam.png*", lambda route: route.fulfill(status=503, body="busy"))
    page.goto(base_url + path)
    problem = page.wait_for_selector("#cam-info .problem")
    assert "did not load" in problem.inner_text() and "Retry" in problem.inner_text()
    assert page.is_hidden("#cam-image")  # no broken-image text over the slice
    page.shots("image-failed")
    page.unroute("**/cam.png*")
    page.click("#cam-info .problem >> text=Retry")
    wait_until(page, HEAT_MAP_LOADED)
    assert page.locator(".problem").count() == 0


def test_a_heat_map_that_never_comes_ends_in_a_message_not_a_wait(
    page, base_url, live_app, phantom_data, monkeypatch
) -> None:
    """The fragment's request runs past the page's limit (made 2 s here): an error and a retry."""
    path = result_url(live_app, phantom_slices(phantom_data, 1))
    count_explains(monkeypatch, delay=8.0)
    monkeypatch.setattr(viewer, "CAM_LIMIT_S", 2)
    page.goto(base_url + path)
    problem = page.wait_for_selector("#cam-info .problem", timeout=15_000)
    assert "no answer from the server within 2 s" in problem.inner_text()
    assert problem.query_selector("a") is not None  # Retry
    page.shots("no-answer")


def test_a_study_opens_on_its_highest_scoring_slice_and_its_strip_fits_a_laptop(
    page, base_url, live_app, phantom_data
) -> None:
    files = phantom_slices(phantom_data, 40)
    path = result_url(live_app, files, study=True)
    with live_app.app_context():
        probabilities = [s.probability for s in db.session.get(Prediction, number(path)).slices]
    best = probabilities.index(max(probabilities)) + 1
    for size in LAPTOPS:
        page.set_viewport_size(size)
        page.goto(base_url + path)
        opened = page.inner_text("#opened-on")
        assert opened == f"Opened on the highest-scoring slice, {best} of 40."
        assert page.inner_text("#viewer h2").startswith(f"Slice {best} of 40:")
        assert page.get_attribute("#strip .strip-item.current", "aria-current") == "true"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= size["width"], f"the page scrolls sideways at {size}: {width} px"
        boxes = page.eval_on_selector_all(
            "#strip .strip-item", "items => items.map(i => i.getBoundingClientRect().toJSON())"
        )
        assert len(boxes) == 40
        assert all(
            b["left"] >= 0 and b["right"] <= size["width"] and b["width"] >= 20 for b in boxes
        )
        assert "uncertain" in page.inner_text("#strip-legend")
        lead = page.inner_text("p.lead")
        assert lead.startswith("Study of 40 slices (") and "study study" not in lead.lower()
        page.shots(f"study-40-at-{size['width']}")


def test_overlay_settings_survive_slice_and_window_changes(
    page, base_url, live_app, tmp_path
) -> None:
    files = [(ct_dicom(tmp_path, f"s{n}.dcm", number=n), f"s{n}.dcm") for n in (1, 2, 3)]
    path = result_url(live_app, files, study=True)
    asked: list[str] = []  # every heat-map request, fragment or image
    page.on("request", lambda r: asked.append(r.url) if "/cam" in r.url else None)
    page.goto(f"{base_url}{path}?slice=0")
    wait_until(page, HEAT_MAP_LOADED)
    page.focus("#opacity")
    for _ in range(6):
        page.keyboard.press("ArrowRight")  # 0.40 -> 0.70, in steps of 0.05
    assert page.inner_text("#opacity-value") == "70%"

    page.click("a.window[data-window=bone]")
    page.wait_for_selector("a.window.current[data-window=bone]")
    assert page.input_value("#opacity") == "0.7"
    page.click("#strip .strip-item >> nth=1")
    page.wait_for_selector("#viewer h2 >> text=Slice 2 of 3")
    assert page.get_attribute("a.window.current", "data-window") == "bone"
    assert page.input_value("#opacity") == "0.7" and page.is_checked("#cam-toggle")
    wait_until(page, HEAT_MAP_LOADED)
    assert page.eval_on_selector("#cam-image", "e => e.style.opacity") == "0.7"
    page.shots("kept-on-slice-2")

    page.uncheck("#cam-toggle")
    page.click("#strip .strip-item >> nth=2")
    page.wait_for_selector("#viewer h2 >> text=Slice 3 of 3")
    assert page.locator("#cam-image").count() == 0 and page.is_visible("#show-overlay")
    assert page.get_attribute("a.window.current", "data-window") == "bone"
    assert all(part in page.url for part in ("slice=2", "window=bone", "cam=off", "opacity=0.7"))
    page.reload()  # the address holds the whole view
    assert page.get_attribute("a.window.current", "data-window") == "bone"
    page.click("#show-overlay")
    wait_until(page, HEAT_MAP_LOADED)
    assert page.input_value("#opacity") == "0.7"
    page.shots("kept-after-reload")
    # One fragment and one image per slice shown with its overlay, and never a page waiting on
    # itself (a swapped-in <noscript> image once asked for the map beside the fragment).
    for position in (0, 1, 2):
        mine = [u for u in asked if f"/slices/{position}/" in u]
        assert [("cam.png" in u) for u in mine] == [False, True], mine
    assert not any("waited=" in u for u in asked)
    assert page.outside == []


def test_long_file_names_wrap_on_history_and_the_result_page(
    page, base_url, live_app, phantom_data
) -> None:
    content, _ = phantom_slices(phantom_data, 1)[0]
    name = "x" * 296 + ".png"
    path = result_url(live_app, [(content, name)])
    page.goto(base_url + "/history?q=" + "x" * 20)
    link = page.locator("#results td.name-cell a")
    assert link.get_attribute("title") == name  # the whole name on hover
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"History is {width} px wide"
    page.shots("history-long-name")
    page.goto(base_url + path)
    assert page.get_attribute("p.lead strong.name", "title") == name
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.shots("result-long-name")
