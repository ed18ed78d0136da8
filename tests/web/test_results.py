"""The result page: viewer fragments, windows, Grad-CAM, notes, review, delete, provenance."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from tests.web.helpers import (
    change,
    count_predictions,
    ct_dicom,
    page_record,
    phantom_slices,
    png_bytes,
    stored_files,
    upload,
)
from webapp.extensions import db
from webapp.models import Prediction


def _predict(client, files) -> str:
    """Upload and return the result page's URL."""
    response = upload(client, files)
    assert response.status_code == 303
    return client.get(response.headers["Location"]).headers["Location"]


def _image(response) -> np.ndarray:
    with response:
        assert response.status_code == 200 and response.mimetype == "image/png"
        return np.asarray(Image.open(io.BytesIO(response.get_data())))


def test_full_page_and_viewer_fragment(client, phantom_data) -> None:
    url = _predict(client, phantom_slices(phantom_data, 1))
    page = client.get(url).get_data(as_text=True)
    assert (
        page.startswith("<!doctype html>") and 'id="viewer"' in page and "Not for clinical" in page
    )
    fragment = client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and "<footer" not in fragment
    assert fragment.lstrip().startswith('<section id="viewer"')


def test_dicom_windows_switch_and_8_bit_images_have_one(client, phantom_data, tmp_path) -> None:
    url = _predict(client, [(ct_dicom(tmp_path, "ct.dcm"), "ct.dcm")])
    images = {w: _image(client.get(f"{url}/slices/0/image.png?window={w}")) for w in
              ("model", "brain", "subdural", "stroke", "bone")}  # fmt: skip
    assert not np.array_equal(images["brain"], images["bone"])
    assert images["stroke"].max() == 255 and images["bone"].max() < 128  # 70 HU: hot vs dark
    fragment = client.get(f"{url}?window=bone", headers={"HX-Request": "true"})
    assert "window=bone" in fragment.get_data(as_text=True)

    png_url = _predict(client, phantom_slices(phantom_data, 1))
    assert client.get(f"{png_url}/slices/0/image.png?window=bone").status_code == 400
    assert "fixed when it was saved" in client.get(png_url).get_data(as_text=True)


def test_the_slice_is_shown_at_its_own_size_with_the_network_square_placed_on_it(
    client, bundle_dir
) -> None:
    """An 80 x 60 image: shown at 80 x 60 (not at the network's 48 px), and the heat map's
    square is the image padded above and below, as the network saw it."""
    pixels = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (60, 1))
    url = _predict(client, [(png_bytes(pixels), "ramp.png")])
    shown = _image(client.get(f"{url}/slices/0/image.png"))
    assert np.array_equal(shown if shown.ndim == 2 else shown[..., 0], pixels)
    page = client.get(url).get_data(as_text=True)
    assert "aspect-ratio: 80 / 60" in page and 'width="80" height="60"' in page
    frame = re.search(r'id="cam-frame"\s+style="([^"]+)"', page).group(1)
    box = {k: float(v) for k, v in re.findall(r"(left|top|width|height): (-?[\d.]+)%", frame)}
    assert box == pytest.approx(
        {"left": 0, "top": -100 / 6, "width": 100, "height": 400 / 3}, abs=1e-3
    )


def test_cam_is_made_on_demand_cached_and_reports_faithfulness(app, client, phantom_data) -> None:
    url = _predict(client, phantom_slices(phantom_data, 1))
    before = len(stored_files(app))
    record = page_record(client, url)["record"]
    info = client.get(f"{url}/slices/0/cam?record={record}", headers={"HX-Request": "true"})
    text = info.get_data(as_text=True)
    assert "Faithfulness" in text and "drop" in text
    heat = _image(client.get(f"{url}/slices/0/cam.png?record={record}"))
    assert heat.ndim == 3 and heat.shape[2] == 3
    assert len(stored_files(app)) == before + 1  # one cached heat map beside the upload
    with app.app_context():
        figures = db.session.scalars(db.select(Prediction)).one().slices[0].faithfulness
    assert set(figures["gradcam"]) >= {"drop_top", "drop_random", "probability"}
    assert client.get(f"{url}/slices/0/cam.png?method=nope&record={record}").status_code == 409
    assert client.get(f"{url}/slices/0/cam.png").status_code == 400  # which result, unsaid


def test_viewer_offers_overlay_controls_and_hides_them_when_off(client, phantom_data) -> None:
    url = _predict(client, phantom_slices(phantom_data, 1))
    page = client.get(f"{url}?opacity=0.7").get_data(as_text=True)
    assert 'id="opacity"' in page and 'value="0.7"' in page and 'id="cam-toggle"' in page
    assert "opacity: 0.7" in page
    off = client.get(f"{url}?cam=off").get_data(as_text=True)
    assert 'id="cam-image"' not in off and "Show Grad-CAM overlay" in off


def test_note_and_review_with_and_without_htmx(app, client, phantom_data) -> None:
    url = _predict(client, phantom_slices(phantom_data, 1))
    plain = change(client, url, "note", {"note": "  looks like motion  "})
    assert plain.status_code == 303
    fragment = change(
        client, url, "review", {"review": "disagree", "true_label": "Normal"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith('<section id="annotations"')
    assert f"Review saved on result {url.rsplit('/', 1)[-1]}" in text
    with app.app_context():
        p = db.session.scalars(db.select(Prediction)).one()
        assert (p.note, p.review, p.true_label) == ("looks like motion", "disagree", "Normal")
        assert p.reviewed_at is not None
    assert change(client, url, "review", {"review": "maybe"}).status_code == 400


def test_delete_asks_first_then_removes_row_and_files(app, client, phantom_data) -> None:
    url = _predict(client, phantom_slices(phantom_data, 1))
    client.get(f"{url}/slices/0/image.png").close()  # a cached rendering to clean up too
    confirm = client.get(f"{url}/delete").get_data(as_text=True)
    assert "cannot be undone" in confirm and count_predictions(app) == 1
    assert 'name="record"' in confirm  # the page without JavaScript names the result too
    response = change(client, url, "delete", {}, headers={"HX-Request": "true"})
    assert response.headers["HX-Redirect"].startswith("/history")
    assert count_predictions(app) == 0 and stored_files(app) == []
    gone = client.get(url)
    assert gone.status_code == 410 and "was deleted" in gone.get_data(as_text=True)


def test_a_result_keeps_its_threshold_and_says_the_active_one_differs(app, client, phantom_data):
    url = _predict(client, phantom_slices(phantom_data, 1))
    with app.app_context():
        p = db.session.scalars(db.select(Prediction)).one()
        p.threshold, p.label = 0.0, "Stroke"  # as if made under an older operating point
        db.session.commit()
    page = client.get(url).get_data(as_text=True)
    assert 'id="stale-threshold"' in page and "Stroke when score ≥ 0.000" in page


def test_a_result_of_another_bundle_says_so(app, client, phantom_data) -> None:
    from webapp.models import BundleRecord

    url = _predict(client, phantom_slices(phantom_data, 1))
    with app.app_context():
        db.session.add(BundleRecord(id="0" * 16, name="older", backbone="x"))
        p = db.session.scalars(db.select(Prediction)).one()
        p.bundle_id, p.bundle_name = "0" * 16, "older"
        db.session.commit()
    assert 'id="stale-bundle"' in client.get(url).get_data(as_text=True)
    record = page_record(client, url)["record"]
    cam = client.get(f"{url}/slices/0/cam?record={record}", headers={"HX-Request": "true"})
    assert "not the loaded model" in cam.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/predictions/999", "/predictions/999/slices/0/image.png"])
def test_missing_results_are_404(client, url) -> None:
    assert client.get(url).status_code == 404


@pytest.mark.slow
def test_the_faithfulness_note_says_how_often_the_peak_fell_in_a_lesion(
    tmp_path, database, slice_label_bundle, two_sources
) -> None:
    """A bundle trained with lesion masks says on every heat map how its peaks fared there."""
    import shutil

    from tests.web.conftest import _make_app

    shutil.copytree(slice_label_bundle, tmp_path / "bundles" / "masked")
    app = _make_app(tmp_path, tmp_path / "bundles", "masked", database=database)
    client = app.test_client()
    image = sorted((two_sources["site"].parent / "images").glob("*.jpg"))[2]
    url = _predict(client, [(image.read_bytes(), image.name)])
    record = page_record(client, url)["record"]
    text = client.get(
        f"{url}/slices/0/cam?record={record}", headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    figures = json.loads((slice_label_bundle / "metrics.json").read_text())["cam_in_lesion"]
    site = figures["by_source"]["site"]
    assert "Checked against outlined lesions" in text
    assert f"on {site['slices']} lesion" in text and "slices of site it never trained on" in text
    rows, columns = site["grid"]  # and how far a map on its grid could get at all
    words = " ".join(text.split())
    assert f"a grid of {rows} &times; {columns} cells" in words
    low, high = (f"{100 * v:.0f}" for v in site["peak_in_lesion_ci95"])
    assert f"({low}–{high}%)" in words  # the interval in the unit of its figure
    ceiling = f"{site['peak_in_lesion_ceiling'] * 100:.0f}%"
    assert f"even a perfect map on it would peak inside the lesion on {ceiling}." in words
