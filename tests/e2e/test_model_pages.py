"""What a browser shows about the model: the phantom-only warning, an input that is not a head
CT, the bundle list's figures and links, the card's intervals, deleting a saved point."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.bundle import load_bundle
from ml.evaluate.numbers import interval, number

pytestmark = pytest.mark.slow


def test_the_upload_page_warns_that_the_model_knows_only_phantoms(page, base_url) -> None:
    page.goto(base_url + "/")
    box = page.locator("#caveats")
    assert box.is_visible()
    text = box.inner_text()
    assert "synthetic phantoms only" in text and "not for clinical use" in text
    page.shots("upload-warning")


def test_a_black_8000_pixel_image_gets_a_warning_not_a_confident_label(
    page, base_url, tmp_path: Path
) -> None:
    path = tmp_path / "black.png"
    Image.fromarray(np.zeros((8000, 8000), np.uint8)).save(path)
    page.goto(base_url + "/")
    page.set_input_files("#files", [str(path)])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/predictions/\d+$"))
    warning = page.locator('#caveats li[data-code="not_head_ct"]')
    assert warning.is_visible()
    assert "does not look like an axial head CT" in warning.inner_text()
    assert "blank" in warning.inner_text()
    assert "the image does not look like an axial head CT" in page.inner_text("p.lead .flag")
    page.shots("blank-result")


def test_the_bundle_list_leads_to_the_card_with_its_intervals(page, base_url, live_app) -> None:
    bundle = load_bundle(Path(live_app.config["BUNDLE_DIR"]) / "tiny")
    page.goto(base_url + "/models")
    row = page.locator(f'tr[data-bundle="{bundle.id}"]')
    figures = bundle.metrics["slice"]
    assert (
        f"{number(figures['roc_auc'])}\n({interval(figures['roc_auc_ci95'])})" in row.inner_text()
    )
    assert row.locator("a", has_text="threshold studio").get_attribute("href") == (
        f"/studio/{bundle.id}"
    )
    page.shots("bundle-list")
    row.locator("a", has_text="model card").click()
    page.wait_for_url(re.compile(rf"/models/{bundle.id}$"))
    active = bundle.metrics["operating_point"]["slice"]
    ci = bundle.point_figures()["slice"][active]["ci95"]["sensitivity"]
    assert f"({interval(ci)})" in page.inner_text("#points-slice")
    page.shots("card-intervals")


def test_a_researcher_deletes_a_saved_point_but_not_the_active_one(page, base_url) -> None:
    page.goto(base_url + "/studio")
    page.wait_for_selector("#save-form")
    for name, activate in (("keep-me", True), ("drop-me", False)):
        page.fill("#point-name", name)
        page.set_checked("#save-activate", activate)
        page.click("#save-form button[type=submit]")
        page.wait_for_selector(f"text=Saved {name}")
    page.locator("form", has=page.locator("button[aria-label='delete drop-me']")).locator(
        "button"
    ).click()
    page.wait_for_selector("text=Deleted the slice operating point drop-me")
    assert page.locator("button[aria-label='delete drop-me']").count() == 0
    assert page.locator("button[aria-label='delete keep-me']").count() == 0  # it is active
    assert page.locator("text=make another active to delete it").is_visible()
    page.shots("point-deleted")
    assert page.outside == []
