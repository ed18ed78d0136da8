"""A heat map is made once, however many requests, threads or worker processes ask for it; the
others wait (bounded) or are told it is under way. And the model loads when a worker starts."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.web.helpers import count_explains, page_record, phantom_slices, stored_files, upload
from webapp.results import explain, viewer

ROOT = Path(__file__).resolve().parents[2]
HX = {"HX-Request": "true"}


def _result(client, phantom_data) -> tuple[str, str]:
    """Upload one slice: its result URL and record."""
    response = upload(client, phantom_slices(phantom_data, 1))
    url = client.get(response.headers["Location"]).headers["Location"]
    return url, page_record(client, url)["record"]


def _lock_file(app) -> Path:
    """Where the lock file of the one stored slice's Grad-CAM goes: beside the slice."""
    [stored] = [p for p in stored_files(app) if p.name.count(".") == 1]
    return stored.with_name(f"{stored.name}.cam-gradcam.png.lock")


class OtherWorker:
    """Another process holding a heat map's lock, as a gunicorn worker making it would."""

    def __init__(self, lock: Path) -> None:
        code = (
            "import fcntl, sys\n"
            "handle = open(sys.argv[1], 'a')\n"
            "fcntl.flock(handle, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "locked"

    def finish(self) -> None:
        self.process.communicate("\n", timeout=30)


def test_a_heat_map_another_process_is_making_is_not_made_again(
    app, client, phantom_data, monkeypatch
) -> None:
    url, record = _result(client, phantom_data)
    calls = count_explains(monkeypatch)
    monkeypatch.setattr(explain, "WAIT_S", 0.5)
    other = OtherWorker(_lock_file(app))
    try:
        pending = client.get(f"{url}/slices/0/cam?record={record}&slice=0", headers=HX)
        text = pending.get_data(as_text=True)
        assert pending.status_code == 200 and "still being made by another request" in text
        assert 'hx-trigger="load delay:2s"' in text and "waited=2" in text
        assert 'id="cam-image"' not in text  # the image is not asked for before it exists
        began = time.monotonic()
        image = client.get(f"{url}/slices/0/cam.png?record={record}")
        assert image.status_code == 503 and image.headers["Retry-After"] == "2"
        assert "still making this heat map" in image.get_data(as_text=True)
        assert 0.4 < time.monotonic() - began < 5  # it waited, a bounded time
        limit = viewer.CAM_LIMIT_S
        late = client.get(f"{url}/slices/0/cam?record={record}&waited={limit}", headers=HX)
        late_text = late.get_data(as_text=True)
        assert f"still not ready after {limit} s" in late_text and "Retry" in late_text
        assert "hx-trigger" not in late_text  # no more polling
        assert calls == []
    finally:
        other.finish()
    done = client.get(f"{url}/slices/0/cam?record={record}&waited=4", headers=HX)
    text = done.get_data(as_text=True)
    assert 'id="faithfulness"' in text and 'hx-swap-oob="true"' in text
    assert re.search(r'<img class="cam" id="cam-image"[^>]+src="[^"]+/cam\.png\?', text)
    assert len(calls) == 1
    assert not any(p.name.endswith(".lock") for p in stored_files(app))  # cleaned up


def test_two_requests_at_once_make_the_heat_map_once(app, phantom_data, monkeypatch) -> None:
    """The fragment and the plain image ask at the same moment, in two threads of one worker."""
    client = app.test_client()
    url, record = _result(client, phantom_data)
    calls = count_explains(monkeypatch, delay=1.5)
    answers: dict[str, object] = {}

    def ask(name: str, path: str, headers: dict[str, str]) -> None:
        with app.test_client().get(path, headers=headers) as response:
            answers[name] = (response.status_code, response.get_data())

    threads = [
        threading.Thread(target=ask, args=("info", f"{url}/slices/0/cam?record={record}", HX)),
        threading.Thread(target=ask, args=("image", f"{url}/slices/0/cam.png?record={record}", {})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(calls) == 1
    info_status, info = answers["info"]
    image_status, image = answers["image"]
    assert image_status == 200 and image.startswith(b"\x89PNG")
    assert info_status == 200
    # The fragment either made the map or (asked second) says it is under way and polls.
    assert b'id="faithfulness"' in info or b"still being made" in info


def test_the_page_asks_for_the_image_only_once_the_map_exists(client, phantom_data) -> None:
    url, record = _result(client, phantom_data)
    first = client.get(url).get_data(as_text=True)
    # With JavaScript: an empty placeholder, filled by the fragment; without: the plain image.
    assert re.search(r'<img class="cam" id="cam-image" alt="" hidden>', first)
    noscript = re.search(r"<noscript>(.*?)</noscript>", first, re.S).group(1)
    assert "cam.png" in noscript
    assert 'hx-trigger="load"' in first and f'"timeout": {viewer.CAM_LIMIT_S * 1000}' in first
    client.get(f"{url}/slices/0/cam?record={record}", headers=HX).close()
    again = client.get(url).get_data(as_text=True)
    assert re.search(r'<img class="cam" id="cam-image" alt="[^"]+"\s+src="[^"]+cam\.png', again)
    assert 'id="faithfulness"' in again  # shown at once, no request left to make
    assert 'hx-trigger="load"' not in again


def test_without_javascript_the_details_link_makes_the_map_and_returns(client, phantom_data):
    url, record = _result(client, phantom_data)
    response = client.get(f"{url}/slices/0/cam?record={record}&slice=0&opacity=0.6")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"{url}?slice=0&opacity=0.6")
    assert 'id="faithfulness"' in client.get(response.headers["Location"]).get_data(as_text=True)


def test_gunicorn_settings_fit_the_slowest_request_and_preload_the_model(app) -> None:
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    # A waiting request gives up before gunicorn would kill it; the page's own limit comes after.
    assert explain.WAIT_S < settings["timeout"] < viewer.CAM_LIMIT_S
    assert settings["timeout"] > 30  # gunicorn's default killed workers in mid heat map
    make_run = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "--config gunicorn.conf.py" in make_run

    class Worker:
        wsgi = app

    before = set(threading.enumerate())
    settings["post_worker_init"](Worker())
    [loader] = [t for t in threading.enumerate() if t not in before]
    loader.join(timeout=120)
    predictor = app.extensions["ctstroke.predictor"]
    assert predictor._torch_models is not None  # loaded before any request asked for it


@pytest.mark.slow
def test_gunicorn_loads_the_model_when_a_worker_starts(tmp_path, bundle_dir) -> None:
    """The real server: the worker logs the model loaded, without a request."""
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "SECRET_KEY": "x" * 32,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "BUNDLE_DIR": str(bundle_dir),
        "ACTIVE_BUNDLE": "tiny",
        "PREDICTOR_BACKEND": "torch",
        "UPLOAD_DIR": str(tmp_path / "uploads"),
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "--config", "gunicorn.conf.py", "--workers", "1", "--bind",
               "127.0.0.1:0"]  # fmt: skip
    lines = []
    with subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as server:
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                lines.append(server.stderr.readline())
                if "model loaded in" in lines[-1] or not lines[-1]:
                    break
        finally:
            server.terminate()
    assert any("model loaded in" in line for line in lines), "".join(lines)
