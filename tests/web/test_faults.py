"""Faults: a locked database, a full disk, an unreadable bundle, a worker killed mid-request.

Each leaves the store as it was (or complete), and the server keeps answering.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from flask import Flask

from tests.web.helpers import phantom_slices
from tests.web.test_api import API, api_predict, make_token
from webapp.extensions import db
from webapp.models import AuditEvent, Job, Prediction

pytestmark = pytest.mark.slow


def _database_file(app: Flask) -> Path:
    return Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))


def _rows(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {
            "jobs": db.session.query(Job).count(),
            "predictions": db.session.query(Prediction).count(),
            "audit": db.session.query(AuditEvent).count(),
        }


def _files(app: Flask) -> list[Path]:
    root = Path(app.config["UPLOAD_DIR"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _lock_for(app: Flask, seconds: float) -> threading.Thread:
    """Another connection holds the write lock of the app's database for `seconds`."""
    ready = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(_database_file(app), isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        ready.set()
        time.sleep(seconds)
        connection.execute("ROLLBACK")
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(5)
    return thread


def test_a_briefly_locked_database_is_waited_for(app, phantom_data) -> None:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'read', 'write')}"}
    holder = _lock_for(app, 1.0)
    started = time.perf_counter()
    response = api_predict(client, auth, phantom_slices(phantom_data, 1))
    waited = time.perf_counter() - started
    holder.join()
    assert response.status_code == 201, response.get_data(as_text=True)
    assert waited >= 0.9  # it really met the lock, and waited instead of failing
    assert _rows(app)["predictions"] == 1


def test_a_lock_held_too_long_is_503_and_stores_nothing(make_app, phantom_data) -> None:
    app = make_app(DATABASE_BUSY_TIMEOUT_S=0.2)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'read', 'write')}"}
    before = _rows(app)
    holder = _lock_for(app, 1.5)
    response = api_predict(client, auth, phantom_slices(phantom_data, 2))
    holder.join()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"]["code"] == "busy"
    assert _rows(app) == before and _files(app) == []
    assert api_predict(client, auth, phantom_slices(phantom_data, 1)).status_code == 201


def test_a_full_disk_is_507_and_leaves_no_file(app, phantom_data, monkeypatch) -> None:
    from webapp import storage

    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'read', 'write')}"}
    before = _rows(app)
    real_fsync, calls = storage.os.fsync, []

    def fsync(descriptor: int) -> None:  # the second file of the upload finds the disk full
        calls.append(descriptor)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    response = api_predict(client, auth, phantom_slices(phantom_data, 3), study="true")
    assert response.status_code == 507
    assert "no space left" in response.get_json()["error"]["message"]
    assert _rows(app) == before and _files(app) == []
    monkeypatch.setattr(storage.os, "fsync", real_fsync)
    assert api_predict(client, auth, phantom_slices(phantom_data, 1)).status_code == 201


@pytest.mark.parametrize("damage", ["unreadable", "garbage"])
def test_an_unusable_bundle_still_starts_and_health_says_why(
    make_app, bundle_dir, phantom_data, monkeypatch, damage
) -> None:
    manifest = bundle_dir / "tiny" / "manifest.json"
    if damage == "garbage":
        manifest.write_text("{ not json")
    else:  # the tests may run as root, who reads everything: refuse the read itself
        real_read = Path.read_text

        def read_text(self: Path, *args, **kwargs) -> str:
            if self == manifest:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_read(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", read_text)
    app = make_app()
    client = app.test_client()
    health = client.get(f"{API}/health")
    body = health.get_json()
    assert health.status_code == 503 and not body["model_loaded"] and body["database"]
    expected = "permission denied" if damage == "unreadable" else "damaged"
    assert expected in body["model_error"]
    assert str(bundle_dir) not in body["model_error"]  # no server path on a public route
    page = client.get("/")
    assert page.status_code == 200 and expected in page.get_data(as_text=True)
    auth = {"Authorization": f"Bearer {make_token(app, 'read', 'write')}"}
    refused = api_predict(client, auth, phantom_slices(phantom_data, 1))
    assert refused.status_code == 503 and _files(app) == []


KILLED = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.getcwd())
    from config import TestConfig
    from webapp import create_app
    from webapp.extensions import db
    from webapp.predict import service

    settings = json.loads(sys.argv[1])
    Config = type("Config", (TestConfig,), settings)
    app = create_app(Config)
    with app.app_context():
        stage = settings["KILL_AT"]
        if stage == "commit":  # the upload's files are written; the process dies at the commit
            db.session.commit = lambda: os._exit(9)
        slices = [
            service.UploadedSlice(name, open(path, "rb").read(), "png", {})
            for name, path in settings["FILES"]
        ]
        job = service.create_job(slices, as_study=True)
        if stage == "predict":  # dies after the second of three slices was predicted
            from webapp.bundles import store as bundle_store
            calls = []
            original = bundle_store.using_predictor

            import contextlib

            @contextlib.contextmanager
            def dying():
                calls.append(1)
                if len(calls) == 4:
                    os._exit(9)
                with original() as predictor:
                    yield predictor

            service.using_predictor = dying
            service.run_job(job.id)
    os._exit(0)
    """
)


@pytest.mark.parametrize("stage", ["commit", "predict"])
def test_a_killed_worker_leaves_a_complete_record_or_none(
    app, bundle_dir, phantom_data, tmp_path, stage
) -> None:
    files = sorted(phantom_data.rglob("*.png"))[:3]
    settings = {
        "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "BUNDLE_DIR": str(bundle_dir),
        "ACTIVE_BUNDLE": "tiny",
        "UPLOAD_DIR": app.config["UPLOAD_DIR"],
        "CACHE_DIR": app.config["CACHE_DIR"],
        "KILL_AT": stage,
        "FILES": [[f.name, str(f)] for f in files],
    }
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", KILLED, json.dumps(settings)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 9, done.stderr
    rows = _rows(app)
    assert rows["predictions"] == 0  # never half a study
    with app.app_context():
        jobs = db.session.query(Job).all()
        if stage == "commit":
            assert jobs == []
            leftovers = _files(app)
            assert len(leftovers) == 3 and all(p.name.endswith(".partial") for p in leftovers)
        else:
            [job] = jobs
            assert job.status == "running" and job.done == 2
            assert len(_files(app)) == 3 and not any(
                p.name.endswith(".partial") for p in _files(app)
            )
    runner = app.test_cli_runner()
    result = runner.invoke(args=["storage", "clean", "--older-than", "0"])
    assert result.exit_code == 0, result.output
    # Uncommitted files go; the files of a job still marked running stay (it may yet finish).
    assert len(_files(app)) == (0 if stage == "commit" else 3)
