"""Helpers for route tests: CSRF tokens, phantom slices as bytes, uploads, waiting for jobs."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from ml.data.synth import write_ct_dicom
from webapp.extensions import db
from webapp.models import Job, Prediction

# `pytestmark = BOTH_DATABASES` runs a module's tests on SQLite and on PostgreSQL (the `database`
# fixture in tests/web/conftest.py says how PostgreSQL is found).
BOTH_DATABASES = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


def csrf_token(client: FlaskClient) -> str:
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the upload page has no CSRF token"
    return match.group(1)


def upload(client: FlaskClient, files: list[tuple[bytes, str]], *, study: bool = False, **kw):
    data: dict[str, object] = {
        "csrf_token": csrf_token(client),
        "files": [(io.BytesIO(content), name) for content, name in files],
    }
    if study:
        data["study"] = "on"
    return client.post("/predict", data=data, content_type="multipart/form-data", **kw)


def post(client: FlaskClient, url: str, data: dict[str, str], **kw):
    return client.post(url, data={"csrf_token": csrf_token(client), **data}, **kw)


def page_record(client: FlaskClient, result_url: str) -> dict[str, str]:
    """The `record` (public id) and `version` a result page sends with every change it makes."""
    page = client.get(result_url).get_data(as_text=True)
    record = re.search(r'name="record" value="([0-9a-f]{32})"', page)
    version = re.search(r'name="version" value="(\d+)"', page)
    assert record and version, "the result page has no record and version fields"
    return {"record": record.group(1), "version": version.group(1)}


def change(client: FlaskClient, result_url: str, action: str, data: dict[str, str], **kw):
    """POST `action` (note, review, delete) as the result page's form does, record included."""
    return post(client, f"{result_url}/{action}", {**page_record(client, result_url), **data}, **kw)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def phantom_slices(phantom_data: Path, count: int) -> list[tuple[bytes, str]]:
    """`count` phantom PNGs of the test data set, as (bytes, file name)."""
    files = sorted(phantom_data.rglob("*.png"))[:count]
    return [(f.read_bytes(), f.name) for f in files]


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with almost no data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def ct_dicom(tmp_path: Path, name: str, *, modality: str = "CT", number: int = 1) -> bytes:
    """A CT slice as DICOM with identifying tags filled in."""
    hu = np.full((64, 64), 30.0, dtype=np.float32)
    hu[20:40, 20:40] = 70.0 + number
    path = tmp_path / name
    write_ct_dicom(
        path, hu, patient_id="PAT-123", instance_number=number,
        slice_position_mm=10.0 * number, modality=modality,
    )  # fmt: skip
    ds = pydicom.dcmread(path)
    ds.PatientName = "Doe^Jane"
    ds.PatientBirthDate = "19600101"
    ds.InstitutionName = "General Hospital"
    ds.save_as(path)
    return path.read_bytes()


def wait_for_job(app: Flask, job_id: str, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            job = db.session.get(Job, job_id)
            if job.finished:
                return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def count_predictions(app: Flask) -> int:
    with app.app_context():
        return db.session.query(Prediction).count()


def stored_files(app: Flask) -> list[Path]:
    root = Path(app.config["UPLOAD_DIR"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def count_explains(monkeypatch, delay: float = 0.0) -> list[float]:
    """Patch the predictor's explain to sleep `delay` s first; the list fills with call times."""
    from ml.infer.predictor import Predictor

    calls: list[float] = []
    real = Predictor.explain

    def slow_explain(self, *args, **kwargs):
        calls.append(time.monotonic())
        time.sleep(delay)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "explain", slow_explain)
    return calls
