"""gunicorn's settings for `make run` (the Makefile passes --config gunicorn.conf.py), and a
start for a deployment's; flags on the command line override them.

timeout: gunicorn kills a worker that has not answered one request within it. The slowest
honest request is a Grad-CAM heat map the first time it is viewed, on a CPU that is busy with
other work (training, other workers); the page then waits for the map, not for a worker.
`python benchmarks/bench_cam.py` measured the cpu preset's map (EfficientNet-Lite0 at 224 px,
5 folds, 3 views, with its faithfulness test) at 19-93 s on 2 cores with a load average of 5-6
(benchmarks/RESULTS.md). 180 s is about twice the slowest, and still ends a hung worker within
three minutes. gunicorn's default of 30 s killed both workers of a busy machine in the middle of
the same heat map, again and again.
"""

from __future__ import annotations

import logging

wsgi_app = "wsgi:app"
timeout = 180
graceful_timeout = 30  # a stopping worker finishes the request in hand, for at most this long
accesslog = "-"


def post_worker_init(worker) -> None:
    """Load the model as soon as the worker runs, in the background, not in its first request;
    the app's own log lines (model loaded, heat maps made, with their times) are shown."""
    from webapp.predict import preload

    worker.wsgi.logger.setLevel(logging.INFO)
    preload.start(worker.wsgi)
