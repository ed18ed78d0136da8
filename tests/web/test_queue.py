"""Jobs on the Redis queue (JOB_QUEUE=rq), the worker, and the reaper of abandoned jobs.

The queue tests start a redis-server of their own, on a free loopback port with its files in a
temporary folder. Without Debian's redis-server (`.ci/redis` installs it) they are skipped
locally, and fail under CI (CI=1), where a skipped queue suite would hide a broken one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.job import Job as QueuedCall

from ml.infer.predictor import Predictor
from tests.web.helpers import (
    count_predictions,
    phantom_slices,
    png_bytes,
    stored_files,
    upload,
    wait_for_job,
)
from tests.web.test_api import api_predict, assert_error, bearer, make_token
from webapp import storage
from webapp.extensions import db
from webapp.models import AuditEvent, Job, Prediction, now
from webapp.predict import jobs, service


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a redis-server started for these tests (no persistence, loopback only)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is missing (apt-get install redis-server, or run .ci/redis)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the job-queue tests must run")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("redis")
    port = _free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    command += ["--save", "", "--appendonly", "no", "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except RedisConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = folder / "redis.log"
                    said = log.read_text() if log.exists() else ""
                    pytest.fail(f"redis-server did not start on port {port}:\n{said}")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The test server, emptied after each test."""
    yield redis_server
    client = Redis.from_url(redis_server)
    client.flushdb()
    client.close()


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """An RQ worker takes over SIGINT and SIGTERM; give them back to pytest afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _job_id(response) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"].rsplit("/", 1)[-1]


def _work(app: Flask) -> None:
    """Run every job waiting on the queue in this process, as `flask worker --burst` does."""
    with app.app_context(), jobs.connected() as client:
        queue = Queue(jobs.QUEUE_NAME, connection=client)
        jobs.AppWorker([queue], connection=client, app=app).work(burst=True)


def _stored(app: Flask, job_id: str) -> tuple[list[tuple[Any, ...]], list[float]]:
    """What a job stored, less what differs between two runs (ids, times, the job id):
    the facts, and the scores apart (compared with a tolerance: threads may sum differently)."""
    with app.app_context():
        made = db.session.scalars(
            db.select(Prediction).where(Prediction.job_id == job_id).order_by(Prediction.id)
        ).all()
        facts = [
            (p.kind, p.name, p.label, p.threshold, p.operating_point, p.uncertain, p.bundle_id,
             p.preprocessing, p.aggregation, p.order_by,
             [(s.position, s.original_name, s.content_sha256, s.label) for s in p.slices])
            for p in made
        ]  # fmt: skip
        scores = [p.score for p in made]
        for p in made:
            for s in p.slices:
                scores += [s.probability, *s.fold_probabilities]
        return facts, scores


def test_queued_jobs_store_what_the_thread_path_stores(
    make_app, redis_url, phantom_data, monkeypatch
) -> None:
    web = make_app(JOB_QUEUE="thread", REDIS_URL=redis_url)
    client = web.test_client()
    files = phantom_slices(phantom_data, 3)
    by_thread = {
        study: wait_for_job(web, _job_id(upload(client, files, study=study))).id
        for study in (True, False)
    }
    web.config["JOB_QUEUE"] = "rq"
    queued = {study: _job_id(upload(client, files, study=study)) for study in (True, False)}

    with web.app_context():  # waiting for a worker: queued, on the queue, the page still polls
        assert {db.session.get(Job, j).status for j in queued.values()} == {"queued"}
        assert jobs.waiting_job_ids() == set(queued.values())
    polled = client.get(f"/jobs/{queued[True]}", headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "0 of 3 slices predicted (queued)" in polled.text
    assert 'hx-trigger="load delay:1s"' in polled.text

    # The worker is another process in production: another app on the same settings.
    worker = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url)
    made = []
    original = Predictor.__init__

    def counting(self, *args, **kwargs) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "__init__", counting)
    _work(worker)

    assert len(made) == 1  # one model for the worker process, not one per job
    for study in (True, False):
        job = wait_for_job(web, queued[study], timeout=5)
        assert job.status == "done", job.error
        assert job.done == 3
        facts, scores = _stored(web, queued[study])
        thread_facts, thread_scores = _stored(web, by_thread[study])
        assert facts == thread_facts
        assert scores == pytest.approx(thread_scores, abs=1e-6)
    assert [p[0] for p in _stored(web, queued[True])[0]] == ["study"]
    assert [p[0] for p in _stored(web, queued[False])[0]] == ["slice"] * 3
    polled = client.get(f"/jobs/{queued[True]}", headers={"HX-Request": "true"})
    assert polled.status_code == 286 and "/predictions/" in polled.headers["HX-Redirect"]


def test_flask_worker_loads_the_model_once_and_runs_the_queue(
    make_app, redis_url, phantom_data, monkeypatch
) -> None:
    web = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url)
    client = web.test_client()
    waiting = [_job_id(upload(client, phantom_slices(phantom_data, 2))) for _ in range(2)]
    worker = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url)
    made = []
    original = Predictor.__init__

    def counting(self, *args, **kwargs) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "__init__", counting)
    result = worker.test_cli_runner().invoke(args=["worker", "--burst"])

    assert result.exit_code == 0, result.output
    assert "worker on queue" in result.output
    assert len(made) == 1  # loaded at start, used by both jobs
    assert [wait_for_job(web, j, timeout=5).status for j in waiting] == ["done", "done"]
    assert count_predictions(web) == 4


def test_flask_worker_refuses_to_start_without_the_queue(make_app, monkeypatch) -> None:
    threads = make_app()
    result = threads.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code != 0 and "JOB_QUEUE is not 'rq'" in result.output
    down = make_app(JOB_QUEUE="rq", REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    result = down.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code != 0 and "Redis does not answer" in result.output


def test_flask_worker_refuses_to_start_on_a_refused_precision(
    make_app, redis_url, monkeypatch
) -> None:
    from ml.infer.openvino import PrecisionRefused

    def refused(self, *args, **kwargs) -> None:
        raise PrecisionRefused("int8 failed its check on 48 out-of-fold slices: 3 flipped")

    monkeypatch.setattr(Predictor, "__init__", refused)
    worker = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url, PREDICTOR_PRECISION="int8")
    result = worker.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot predict as configured: int8 failed its check" in result.output


def test_a_worker_on_another_database_says_so(make_app, redis_url) -> None:
    worker = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url)
    with worker.app_context():
        jobs.enqueue(service.run_queued_job, "0" * 32)  # a job this database does not hold
    _work(worker)
    with worker.app_context(), jobs.connected() as client:
        call = QueuedCall.fetch("0" * 32, connection=client)
        assert call.is_failed
        assert "is not in the database" in call.latest_result().exc_string
        assert "DATABASE_URL" in call.latest_result().exc_string


def test_redis_down_refuses_the_upload_and_stores_nothing(make_app, phantom_data) -> None:
    app = make_app(JOB_QUEUE="rq", REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    client = app.test_client()
    response = upload(client, phantom_slices(phantom_data, 3), study=True)

    assert response.status_code == 503
    assert "job queue cannot be reached" in response.text and "nothing was" in response.text
    with app.app_context():
        assert db.session.query(Job).count() == 0
        assert db.session.query(AuditEvent).count() == 0
    assert count_predictions(app) == 0 and stored_files(app) == []

    # One slice is predicted within the request and needs no queue.
    assert upload(client, phantom_slices(phantom_data, 1)).status_code == 303
    assert count_predictions(app) == 1


def test_redis_lost_after_the_check_fails_the_job_and_removes_its_files(
    make_app, phantom_data, monkeypatch
) -> None:
    app = make_app(JOB_QUEUE="rq", REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    monkeypatch.setattr(jobs, "check_reachable", lambda: None)  # it answered, then went away
    response = upload(app.test_client(), phantom_slices(phantom_data, 3), study=True)

    assert response.status_code == 503 and "job queue cannot be reached" in response.text
    with app.app_context():
        [job] = db.session.scalars(db.select(Job)).all()
        assert job.status == "failed" and "job queue cannot be reached" in job.error
    assert count_predictions(app) == 0 and stored_files(app) == []


def _job_row(app: Flask, status: str, idle: timedelta, slices: int = 2) -> str:
    """A job as a worker left it: `status`, last progress `idle` ago, its slices on disk."""
    with app.app_context():
        inputs = [
            {"name": f"s{n}.png", "stored": _stored_file(), "sha256": "0" * 64, "format": "png",
             "info": {}}
            for n in range(slices)
        ]  # fmt: skip
        job = Job(
            id=os.urandom(16).hex(), mode="batch", status=status, total=slices,
            done=0 if status == "queued" else 1, inputs=inputs,
            created_at=now() - idle, updated_at=now() - idle,
        )  # fmt: skip
        db.session.add(job)
        db.session.commit()
        return job.id


def _stored_file() -> str:
    """A slice in the upload folder under a generated name, as an upload leaves it."""
    name = f"{os.urandom(16).hex()}.png"
    path = storage.path_of(name)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(png_bytes(np.full((64, 64), 90, dtype=np.uint8)))
    return name


def _files_of(app: Flask, job_id: str) -> list[Path]:
    with app.app_context():
        job = db.session.get(Job, job_id)
        return [storage.path_of(item["stored"]) for item in job.inputs]


def test_reap_fails_abandoned_jobs_and_leaves_live_ones(app, runner) -> None:
    died_running = _job_row(app, "running", timedelta(hours=2))
    never_started = _job_row(app, "queued", timedelta(hours=2))
    still_running = _job_row(app, "running", timedelta(minutes=5))
    finished = _job_row(app, "done", timedelta(hours=2))
    kept = {j: _files_of(app, j) for j in (still_running, finished)}
    assert all(f.exists() for j in (died_running, never_started) for f in _files_of(app, j))

    result = runner.invoke(args=["jobs", "reap", "--older-than", "30"])

    assert result.exit_code == 0, result.output
    assert "2 job(s) reaped" in result.output
    with app.app_context():
        for job_id, was in ((died_running, "running"), (never_started, "queued")):
            job = db.session.get(Job, job_id)
            assert job.status == "failed"
            assert f"was {was} with no progress for over 30 minutes" in job.error
            assert not any(f.exists() for f in _files_of(app, job_id))
        assert db.session.get(Job, still_running).status == "running"
        assert db.session.get(Job, finished).status == "done"
        events = db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "reap"))
        assert sorted(e.target for e in events) == sorted(
            f"job {j}" for j in (died_running, never_started)
        )
    assert all(f.exists() for files in kept.values() for f in files)
    page = app.test_client().get(f"/jobs/{died_running}").text
    assert "nothing was stored" in page and "abandoned" in page


def test_reap_leaves_jobs_still_waiting_on_the_redis_queue(make_app, redis_url) -> None:
    app = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url)
    waiting, lost = (_job_row(app, "queued", timedelta(hours=2)) for _ in range(2))
    with app.app_context():
        jobs.enqueue(service.run_queued_job, waiting)  # `lost` went with a flushed Redis
        reaped = jobs.reap(timedelta(minutes=30))
        assert [job.id for job in reaped] == [lost]
        assert db.session.get(Job, waiting).status == "queued"
    assert all(f.exists() for f in _files_of(app, waiting))


@pytest.mark.parametrize("slices", [1, 2])
def test_a_job_reaped_while_it_runs_stores_nothing(app, monkeypatch, slices) -> None:
    job_id = _job_row(app, "queued", timedelta(0), slices=slices)
    original = Predictor.predict_prepared

    def reaped_meanwhile(self, *args, **kwargs):
        if not getattr(reaped_meanwhile, "done", False):
            reaped_meanwhile.done = True
            assert [j.id for j in jobs.reap(timedelta(0))] == [job_id]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_prepared", reaped_meanwhile)
    with app.app_context():
        service.run_job(job_id)
        job = db.session.get(Job, job_id)
        assert job.status == "failed" and job.error.startswith("abandoned")
    assert count_predictions(app) == 0 and stored_files(app) == []


def test_an_unknown_job_queue_is_refused_at_start(make_app) -> None:
    with pytest.raises(ValueError, match="choose one of thread, rq"):
        make_app(JOB_QUEUE="celery")


def test_the_queue_gets_a_timeout_and_a_result_ttl(make_app, redis_url) -> None:
    app = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url, JOB_TIMEOUT=123, JOB_RESULT_TTL=456)
    with app.app_context():
        jobs.enqueue(service.run_queued_job, "f" * 32)
    with app.app_context(), jobs.connected() as client:
        call = Queue(jobs.QUEUE_NAME, connection=client).fetch_job("f" * 32)
        assert (call.timeout, call.result_ttl, call.failure_ttl) == (123, 456, 456)
        assert call.func_name == "webapp.predict.service.run_queued_job"


def test_a_job_over_its_timeout_fails_and_stores_nothing(
    make_app, redis_url, phantom_data, monkeypatch
) -> None:
    web = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url, JOB_TIMEOUT=1)
    job_id = _job_id(upload(web.test_client(), phantom_slices(phantom_data, 2)))
    worker = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url, JOB_TIMEOUT=1)
    monkeypatch.setattr(Predictor, "predict_prepared", lambda *a, **k: time.sleep(30))
    started = time.monotonic()
    _work(worker)

    assert time.monotonic() - started < 20  # interrupted after 1 s, not waited out
    job = wait_for_job(web, job_id, timeout=5)
    assert job.status == "failed" and "timeout" in job.error
    assert count_predictions(web) == 0 and stored_files(web) == []


def test_api_wait_false_puts_the_job_on_the_queue(make_app, redis_url, phantom_data) -> None:
    """The web worker answers 202 and predicts nothing; a queue worker does, as the API's
    synchronous answer would have."""
    web = make_app(JOB_QUEUE="rq", REDIS_URL=redis_url)
    client = web.test_client()
    headers = bearer(make_token(web, "read", "write"))
    files = phantom_slices(phantom_data, 2)
    accepted = api_predict(client, headers, files, wait="false")
    assert accepted.status_code == 202
    job = client.get(accepted.headers["Location"], headers=headers).get_json()
    assert job["status"] == "queued" and job["mode"] == "batch" and job["done"] == 0
    with web.app_context():
        assert jobs.waiting_job_ids() == {job["id"]}
    assert count_predictions(web) == 0

    _work(make_app(JOB_QUEUE="rq", REDIS_URL=redis_url))
    job = client.get(accepted.headers["Location"], headers=headers).get_json()
    assert job["status"] == "done" and len(job["predictions"]) == 2
    now = api_predict(client, headers, files).get_json()["predictions"]
    queued = [client.get(p["url"], headers=headers).get_json() for p in job["predictions"]]
    assert [p["score"] for p in queued] == pytest.approx([p["score"] for p in now], abs=1e-6)


def test_api_wait_false_with_redis_down_is_503_and_stores_nothing(make_app, phantom_data) -> None:
    app = make_app(JOB_QUEUE="rq", REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    client = app.test_client()
    headers = bearer(make_token(app, "read", "write"))
    response = api_predict(client, headers, phantom_slices(phantom_data, 1), wait="false")
    assert_error(response, 503, "job queue cannot be reached")
    assert response.headers["Retry-After"] == "30"
    with app.app_context():
        assert db.session.query(Job).count() == 0
    assert count_predictions(app) == 0 and stored_files(app) == []
