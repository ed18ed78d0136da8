"""Background jobs: the Redis queue (JOB_QUEUE = "rq"), its worker, and the reaper.

With JOB_QUEUE = "thread" (the default) a large upload is predicted in a thread of the web
process that took it (webapp.predict.service). With "rq" it goes on a Redis queue, and
`flask --app wsgi worker` processes predict it, so web workers stay free. A worker builds the
app once, from the same settings as the web app, and keeps its model for the life of the
process: jobs run one after the other in that process (RQ's SimpleWorker, no fork per job).

A worker that dies (killed, out of memory, machine lost) leaves its job "running", and one that
never comes leaves jobs "queued". `flask --app wsgi jobs reap` marks such jobs failed once they
have shown no progress for STALE_JOB_MINUTES, and removes their files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job as QueuedCall
from sqlalchemy import select, update

from webapp import audit, storage
from webapp.extensions import db
from webapp.models import Job, now

log = logging.getLogger(__name__)
JOB_QUEUES = ("thread", "rq")
QUEUE_NAME = "ctstroke-predictions"
UNFINISHED = ("queued", "running")


class QueueUnavailable(RuntimeError):
    """The job queue (Redis) cannot be reached; `status` is the HTTP status to answer with."""

    status = 503


def init_app(app: Flask) -> None:
    """Check the JOB_QUEUE setting and add the `worker` and `jobs` commands."""
    if app.config["JOB_QUEUE"] not in JOB_QUEUES:
        raise ValueError(
            f"JOB_QUEUE={app.config['JOB_QUEUE']!r} is not known; choose one of "
            f"{', '.join(JOB_QUEUES)}"
        )
    app.cli.add_command(worker_command)
    app.cli.add_command(jobs_cli)


def uses_queue() -> bool:
    return current_app.config["JOB_QUEUE"] == "rq"


@contextmanager
def connected() -> Iterator[Redis]:
    """A Redis client for REDIS_URL, closed after the block (no socket outlives its use)."""
    # Fail within seconds when Redis is down, rather than hold the upload request.
    client = Redis.from_url(current_app.config["REDIS_URL"], socket_connect_timeout=5)
    try:
        yield client
    finally:
        client.close()


def check_reachable() -> None:
    """Raise QueueUnavailable unless Redis answers, so an upload can be refused before storing."""
    try:
        with connected() as client:
            client.ping()
    except RedisError as exc:
        raise _unavailable(exc) from None


def enqueue(function: Callable[[str], Any], job_id: str) -> None:
    """Put `function(job_id)` on the queue, under the job's own id, with a timeout and TTL."""
    config = current_app.config
    try:
        with connected() as client:
            Queue(QUEUE_NAME, connection=client).enqueue_call(
                function,
                args=(job_id,),
                job_id=job_id,
                timeout=config["JOB_TIMEOUT"],
                result_ttl=config["JOB_RESULT_TTL"],
                failure_ttl=config["JOB_RESULT_TTL"],
                description=f"predict job {job_id}",
            )
    except RedisError as exc:
        raise _unavailable(exc) from None


def _unavailable(exc: Exception) -> QueueUnavailable:
    # The log names the server; the user is told what happened and what to do, not where.
    log.error("job queue unreachable at %s: %s", _redis_address(), exc)
    return QueueUnavailable(
        "The job queue cannot be reached, so this upload was not accepted and nothing was "
        "stored. Try again in a minute; if it keeps happening, the job queue (Redis) needs "
        "attention."
    )


def _redis_address() -> str:
    """host:port/db of REDIS_URL, without any password in it."""
    url = urlsplit(current_app.config["REDIS_URL"])
    if url.hostname is None:  # unix:///path/to/redis.sock
        return url.path
    return f"{url.hostname}:{url.port or 6379}{url.path}"


def fail(job: Job, message: str) -> None:
    """Mark a job failed and delete the files stored for it (its results were never stored)."""
    job.status, job.error = "failed", message
    db.session.commit()
    for item in job.inputs:
        storage.remove(item["stored"])


def waiting_job_ids() -> set[str]:
    """Ids of the jobs still waiting on the Redis queue for a worker."""
    try:
        with connected() as client:
            return set(Queue(QUEUE_NAME, connection=client).get_job_ids())
    except RedisError as exc:
        raise _unavailable(exc) from None


def reap(older_than: timedelta) -> list[Job]:
    """Fail every job queued or running with no progress for `older_than`; its files go too.

    A running job records progress after every slice, so one silent for many minutes has lost
    its worker. A queued job may be silent while it waits its turn: with the Redis queue, one
    still waiting there is never reaped; with threads, the age threshold must be longer than
    the longest wait. Each job is claimed with a conditional update, so a worker finishing at
    that moment either stores its results (and the job is not reaped) or stores nothing.
    """
    cutoff = now() - older_than
    stale = list(
        db.session.scalars(
            select(Job)
            .where(Job.status.in_(UNFINISHED), Job.updated_at < cutoff)
            .order_by(Job.created_at)
        )
    )
    if uses_queue() and any(job.status == "queued" for job in stale):
        waiting = waiting_job_ids()
        stale = [job for job in stale if job.id not in waiting]
    minutes = older_than.total_seconds() / 60
    reaped = []
    for job in stale:
        was = job.status
        message = (
            f"abandoned: the job was {was} with no progress for over {_minutes(minutes)}, so "
            "the worker that had it most likely stopped. Nothing was stored; upload the files "
            "again."
        )
        claimed = db.session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == was, Job.updated_at < cutoff)
            .values(status="failed", error=message)
            .execution_options(synchronize_session="fetch")
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            audit.record(
                "reap", f"job {job.id}", was=was, done=job.done, total=job.total,
                idle_minutes=minutes, files=len(job.inputs),
            )  # fmt: skip
            reaped.append(job)
    db.session.commit()
    for job in reaped:
        for item in job.inputs:
            storage.remove(item["stored"])
    return reaped


def _minutes(count: float) -> str:
    return f"{count:g} minute{'' if count == 1 else 's'}"


class AppWorker(SimpleWorker):
    """An RQ worker that runs each job in the same process, inside an app context of its own.

    One process, one app: the model that the first job loads (or `flask worker` loads at
    start) serves every later job. Each job gets a fresh app context, so a fresh database
    session. A job over its timeout is interrupted (SIGALRM) and fails like any other error.
    """

    def __init__(self, *args: Any, app: Flask, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app

    def execute_job(self, job: QueuedCall, queue: Queue) -> None:
        with self.app.app_context():
            super().execute_job(job, queue)


@click.command("worker")
@click.option("--burst", is_flag=True, help="run the jobs waiting now, then stop")
@with_appcontext
def worker_command(burst: bool) -> None:
    """Predict queued uploads (JOB_QUEUE=rq), one at a time, with the model loaded once."""
    from ml import UserError
    from webapp.bundles.store import using_predictor
    from webapp.errors import ModelNotLoaded

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if not uses_queue():
        raise click.ClickException(
            "JOB_QUEUE is not 'rq': the web app predicts in its own threads and puts nothing "
            "on a queue. Set JOB_QUEUE=rq (and REDIS_URL) for the web app and its workers."
        )
    try:
        check_reachable()
        reaped = reap(timedelta(minutes=app.config["STALE_JOB_MINUTES"]))
    except QueueUnavailable:
        raise click.ClickException(f"Redis does not answer at {_redis_address()}") from None
    for job in reaped:
        click.echo(f"reaped job {job.id}: {job.error}")
    try:
        with using_predictor() as predictor:
            predictor.load(cam=False)  # now: every job of this process uses it
    except ModelNotLoaded as exc:
        raise click.ClickException(f"no model to predict with: {exc}") from None
    except UserError as exc:  # a precision the bundle's check refused, say
        raise click.ClickException(f"the model cannot predict as configured: {exc}") from None
    click.echo(
        f"worker on queue {QUEUE_NAME} at {_redis_address()}; database "
        f"{db.engine.url.render_as_string(hide_password=True)}; uploads {storage.upload_root()}; "
        f"inference {predictor.backend} {predictor.precision}"
    )
    with connected() as client:
        AppWorker([Queue(QUEUE_NAME, connection=client)], connection=client, app=app).work(
            burst=burst
        )


jobs_cli = AppGroup("jobs", help="Prediction jobs (uploads being predicted).")


@jobs_cli.command("reap")
@click.option(
    "--older-than",
    type=click.IntRange(min=1),
    default=None,
    help="minutes without progress [default: STALE_JOB_MINUTES, 60]",
)
def reap_command(older_than: int | None) -> None:
    """Fail jobs left queued or running by a worker that stopped, and delete their files."""
    minutes = older_than or current_app.config["STALE_JOB_MINUTES"]
    try:
        reaped = reap(timedelta(minutes=minutes))
    except QueueUnavailable:
        raise click.ClickException(
            f"Redis does not answer at {_redis_address()}, so it is unknown which queued jobs "
            "still wait there; nothing was reaped"
        ) from None
    for job in reaped:
        click.echo(f"reaped job {job.id} ({job.mode}, {job.done}/{job.total} slices)")
    click.echo(f"{len(reaped)} job(s) reaped (no progress for over {_minutes(minutes)})")
