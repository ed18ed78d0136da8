"""A live server on a free localhost port and Debian's Chromium driven by Playwright.

The browser is never downloaded: Playwright launches /usr/bin/chromium (`apt-get install
chromium`; .ci/run installs it). Without it these tests are skipped locally, and fail under CI
(CI=1), where a skipped browser suite would hide a broken one. Screenshots of every step go to
test-artifacts/e2e/ (not committed).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade
from werkzeug.serving import make_server

from config import TestConfig
from tests.web.helpers import upload, wait_for_job
from webapp import create_app

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


def make_live_app(tiny_bundle: Path, root: Path, **settings: object) -> Flask:
    """An app on its own database, uploads and bundle folder under `root`; `settings` are
    further configuration values (AUTH_REQUIRED=True, say)."""
    shutil.copytree(tiny_bundle, root / "bundles" / "tiny")

    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{root / 'live.sqlite3'}"
        BUNDLE_DIR = root / "bundles"
        ACTIVE_BUNDLE = "tiny"
        UPLOAD_DIR = str(root / "uploads")
        CACHE_DIR = str(root / "cache")

    for key, value in settings.items():
        setattr(Config, key, value)
    app = create_app(Config)
    with app.app_context():
        upgrade()
    return app


@pytest.fixture(scope="module")
def live_app(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """The app the browser tests talk to; a module may override this fixture."""
    return make_live_app(tiny_bundle, tmp_path_factory.mktemp("live"))


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve `app` on a free localhost port while the block runs; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url(live_app: Flask) -> Iterator[str]:
    with live_server(live_app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
            )
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page at 1280x800 that records every request leaving this server."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.outside = []  # requests to anywhere but the live server
    page.on(
        "request",
        lambda req: (
            None
            if req.url.startswith((base_url, "data:", "blob:"))
            else page.outside.append(req.url)
        ),
    )
    page.shots = Screenshots(page, request.node.name)
    yield page
    context.close()


class Screenshots:
    """Numbered screenshots of each step, kept as test artefacts."""

    def __init__(self, page, test_name: str) -> None:
        self.page, self.folder, self.count = page, ARTIFACTS / test_name, 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, step: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{step}.png"), full_page=True)


# A predicate for wait_until: the overlay image is in the page and has loaded.
HEAT_MAP_LOADED = (
    "() => { const cam = document.getElementById('cam-image');"
    " return !!cam && cam.complete && cam.naturalWidth > 0; }"
)


def wait_until(page, function: str, timeout: float = 30.0) -> None:
    """Poll `function` (JavaScript, e.g. "() => ...") until it is truthy.

    Playwright's wait_for_function evaluates its predicate with eval inside the page, which our
    Content-Security-Policy (rightly) forbids; page.evaluate is not subject to it.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(function):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {function}")
        time.sleep(0.02)


def result_url(app: Flask, files: list[tuple[bytes, str]], *, study: bool = False) -> str:
    """Upload through the app (a single slice, or a study run as a job); the result's path."""
    client = app.test_client()
    response = upload(client, files, study=study)
    assert response.status_code == 303, response.get_data(as_text=True)
    if study:
        wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1], timeout=180)
    return client.get(response.headers["Location"]).headers["Location"]
