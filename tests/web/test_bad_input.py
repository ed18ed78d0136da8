"""Hostile and odd input through the browser routes: a clear status, nothing stored, still serving.

(The API's bad input is in test_api.py; the decoder's own cases in tests/unit/test_readers.py.)
"""

from __future__ import annotations

import csv
import html
import io
import zipfile

import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.web.helpers import (
    change,
    count_predictions,
    ct_dicom,
    phantom_slices,
    post,
    stored_files,
    upload,
    wait_for_job,
)
from webapp.extensions import db
from webapp.models import Prediction


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _refused(app, client, files, status: int, message: str) -> None:
    response = upload(client, files)
    text = html.unescape(response.get_data(as_text=True))
    assert response.status_code == status, text[-600:]
    assert message in text and "Nothing was stored" in text
    assert count_predictions(app) == 0 and stored_files(app) == []
    assert client.get("/").status_code == 200  # still serving


def test_text_renamed_dcm_and_truncated_jpeg(app, client) -> None:
    _refused(app, client, [(b"%PDF-1.4 not a scan", "scan.dcm")], 415, "not a PNG, JPEG or DICOM")
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(buffer, format="JPEG")
    cut = buffer.getvalue()[:200]
    _refused(app, client, [(cut, "cut.jpg")], 422, "damaged or truncated")


def test_dicom_without_pixels_and_with_an_undecodable_syntax(app, client, tmp_path) -> None:
    ds = pydicom.dcmread(io.BytesIO(ct_dicom(tmp_path, "a.dcm")))
    del ds.PixelData
    out = io.BytesIO()
    ds.save_as(out)
    _refused(app, client, [(out.getvalue(), "empty.dcm")], 422, "no pixel data")

    ds = pydicom.dcmread(io.BytesIO(ct_dicom(tmp_path, "b.dcm")))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000, but the bytes are raw
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    _refused(app, client, [(out.getvalue(), "j2k.dcm")], 422, "cannot be decoded here")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../escape.png": b"x"}, "unsafe path"),
        ({"inner.zip": b"PK\x03\x04"}, "zips inside the zip"),
        ({"bomb.png": b"\0" * (80 * 1024 * 1024)}, "larger than 64 MiB"),
        ({"readme.txt": b"no slices"}, "holds no PNG, JPEG or DICOM"),
    ],
)
def test_unsafe_zips_are_refused(app, client, members, message) -> None:
    _refused(app, client, [(_zip(members), "series.zip")], 422, message)


def test_16_bit_and_rgba_images_are_read(app, client) -> None:
    deep = io.BytesIO()
    Image.fromarray(np.full((64, 64), 1064, np.uint16)).save(deep, format="PNG")  # 40 HU
    rgba = io.BytesIO()
    Image.fromarray(np.full((64, 64, 4), 120, np.uint8), mode="RGBA").save(rgba, format="PNG")
    response = upload(client, [(deep.getvalue(), "deep.png"), (rgba.getvalue(), "rgba.png")])
    assert response.status_code == 303
    job = wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    assert job.status == "done" and count_predictions(app) == 2


def test_markup_in_names_and_notes_is_escaped_everywhere(app, client, phantom_data) -> None:
    content, _ = phantom_slices(phantom_data, 1)[0]
    evil = "<script>alert(1)</script>.png"
    response = upload(client, [(content, evil)])
    result = client.get(response.headers["Location"]).headers["Location"]
    change(client, result, "note", {"note": "<img src=x onerror=alert(1)>"})
    for url in (result, "/history", "/history?q=script"):
        page = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in page and "<img src=x" not in page, url
        assert "&lt;script&gt;" in page, url
    rows = list(
        csv.DictReader(io.StringIO(client.get("/history/export.csv").get_data(as_text=True)))
    )
    assert rows[0]["name"] == evil  # the CSV keeps the text as typed: data, not markup


def test_a_note_over_the_limit_is_refused_and_nothing_is_saved(app, client, phantom_data) -> None:
    content, name = phantom_slices(phantom_data, 1)[0]
    result = client.get(upload(client, [(content, name)]).headers["Location"]).headers["Location"]
    assert change(client, result, "note", {"note": "kept"}).status_code == 303
    refused = change(client, result, "note", {"note": "a" * 5001})
    assert refused.status_code == 400
    assert "5,001 characters" in refused.get_data(as_text=True)
    assert "Nothing was saved" in refused.get_data(as_text=True)
    assert ">kept</textarea>" in client.get(result).get_data(as_text=True)
    # A browser sends a line break as CRLF but counts it once against maxlength="5000".
    lines = "\r\n".join(["a" * 99] * 50)  # 4,999 characters as typed, 5,048 as sent
    assert change(client, result, "note", {"note": lines}).status_code == 303
    with app.app_context():
        assert len(db.session.scalars(db.select(Prediction)).one().note) == 4999


@pytest.mark.parametrize("value", ["-1", "2", "nan", "abc"])
def test_bad_thresholds_in_the_studio_are_400(client, bundle_dir, value) -> None:
    from ml.bundle import load_bundle

    bundle_id = load_bundle(bundle_dir / "tiny").id
    data = {"level": "slice", "threshold": value, "name": "x"}
    response = post(client, f"/studio/{bundle_id}/points", data)
    assert response.status_code == 400
    page = client.get(f"/studio/{bundle_id}?threshold={value}")  # ignored, not an error
    assert page.status_code == 200
