"""gunicorn's settings for `make run` (the Makefile passes --config gunicorn.conf.py), and a
start for a deployment's; flags on the command line override them.

timeout: gunicorn kills a worker that has not answered one request within it. The slowest
honest requests are a Grad-CAM heat map the first time it is viewed and a slice predicted
within its upload request, on a CPU that is busy with other work (training, other workers).
`python benchmarks/bench_cam.py` measures them; on 2 busy cores the heat map of the cpu preset
(EfficientNet-Lite0 at 224 px, 5 folds, 3 views, with its faithfulness test) took about
MEASURED s, and the one worker that makes it is the only one that waits (webapp/results/explain.py). 120 s
leaves that a wide margin and still ends a hung worker within two minutes. gunicorn's default
of 30 s killed both workers of a busy machine in the middle of their heat maps.
"""

from __future__ import annotations

import logging

wsgi_app = "wsgi:app"
timeout = 120
graceful_timeout = 30  # a stopping worker finishes the request in hand, for at most this long
accesslog = "-"


def post_worker_init(worker) -> None:
    """Load the model as soon as the worker runs, in the background, not in its first request;
    the app's own log lines (model loaded, heat maps made, with their times) are shown."""
    from webapp.predict import preload

    worker.wsgi.logger.setLevel(logging.INFO)
    preload.start(worker.wsgi)
