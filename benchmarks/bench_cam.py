"""Grad-CAM under gunicorn: how long a heat map takes, and that two first views make it once.

    python benchmarks/bench_cam.py                # the cpu preset's shape, 2 workers, idle cores
    python benchmarks/bench_cam.py --busy 2       # with 2 processes keeping the cores busy

A bundle of randomly initialised fold models (speed does not depend on the weights; the cpu
preset's EfficientNet-Lite0 at 224 px, 5 folds, cropped to the head) is served by gunicorn with
gunicorn.conf.py and `--workers` workers, on a temporary database and upload folder. `--busy N`
starts N processes that spin on the CPU, as a training run on the same machine would.

1. the workers start: how long each took to load the model (in the background, gunicorn.conf.py);
2. `--repeats` slices are each predicted by the API within the request (a slow honest request);
3. for each, two clients ask for its heat map at the same moment, as the first view of a result
   page did before (the htmx fragment and the plain image): the time until each has its answer,
   its status, and how many heat maps the server made (counted in its log).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_inference import make_random_bundle
from bench_web import ROOT, _environment, _flask, _free_port, _multipart, _slice_png, _token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU")
    parser.add_argument("--repeats", type=int, default=3, help="heat maps made")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cam-") as tmp:
        folder = Path(tmp)
        make_random_bundle(
            folder / "bundles" / "bench", args.backbone, args.image_size, args.folds,
            crop_head=True,
        )  # fmt: skip
        settings = argparse.Namespace(bundle_dir=folder / "bundles", bundle="bench")
        env = {**_environment(folder, settings), "PREDICTOR_BACKEND": "torch"}
        env.pop("OMP_NUM_THREADS")  # torch's own default, as `make run` has it
        _flask(env, "db", "upgrade")
        token = _token(env)
        burners = [_burner() for _ in range(args.busy)]
        log_path = folder / "gunicorn.log"
        try:
            with log_path.open("w") as log:
                port = _free_port()
                server = _gunicorn(env, port, args.workers, log)
                try:
                    _run(port, token, args, log_path)
                finally:
                    server.terminate()
                    server.wait(timeout=60)
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()


def _run(port: int, token: str, args: argparse.Namespace, log_path: Path) -> None:
    loads = _wait_for(log_path, r"model loaded in ([\d.]+) s", args.workers)
    print(f"{args.backbone} at {args.image_size} px, {args.folds} folds, crop_head; "
          f"{args.workers} workers, {args.busy} busy processes")  # fmt: skip
    print(f"model loaded when a worker started, in the background: {_seconds(loads)}")
    for repeat in range(args.repeats):
        started = time.perf_counter()
        body = _predict(port, token, np.random.default_rng(repeat))
        predict_s = time.perf_counter() - started
        number, record = body["id"], body["public_id"]
        answers = _two_first_views(port, number, record)
        made = [
            float(seconds)
            for result, seconds in re.findall(
                r"heat map gradcam of result (\d+), slice 0, made in ([\d.]+) s",
                log_path.read_text(),
            )
            if int(result) == number
        ]
        views = ", ".join(
            f"{name} {status} after {seconds:.1f} s" for name, status, seconds in answers
        )
        print(f"result {number}: predicted in {predict_s:.1f} s; two first views: {views}; "
              f"heat maps made: {len(made)} ({_seconds(made)})")  # fmt: skip


def _two_first_views(port: int, number: int, record: str) -> list[tuple[str, int, float]]:
    """The fragment (htmx) and the plain image of one slice, asked for at the same moment."""
    base = f"/predictions/{number}/slices/0"
    asks = {
        "fragment": (f"{base}/cam?record={record}", {"HX-Request": "true"}),
        "image": (f"{base}/cam.png?record={record}", {}),
    }
    answers: list[tuple[str, int, float]] = []
    start = threading.Barrier(len(asks))

    def ask(name: str, path: str, headers: dict[str, str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start.wait()
        began = time.perf_counter()
        try:
            connection.request("GET", path, headers=headers)
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException):
            status = -1  # the worker was killed: no answer at all
        answers.append((name, status, time.perf_counter() - began))
        connection.close()

    threads = [threading.Thread(target=ask, args=(n, *a)) for n, a in asks.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers)


def _predict(port: int, token: str, rng: np.random.Generator) -> dict:
    body, content_type = _multipart({"files": ("bench-cam.png", _slice_png(rng))})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
    connection.request("POST", "/api/v1/predict", body=body, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    if response.status != 201:
        raise SystemExit(f"predict answered {response.status}: {payload[:300]!r}")
    return json.loads(payload)


def _gunicorn(env: dict[str, str], port: int, workers: int, log) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "--config", "gunicorn.conf.py", "--workers", str(workers),
               "--bind", f"127.0.0.1:{port}"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)


def _burner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _wait_for(log_path: Path, pattern: str, count: int, seconds: float = 300) -> list[float]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = log_path.read_text()
        found = [float(s) for s in re.findall(pattern, text)]
        if len(found) >= count:
            return found
        if "Traceback" in text:
            break
        time.sleep(0.5)
    raise SystemExit(f"the server did not log {pattern!r} {count} times:\n{log_path.read_text()}")


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f} s" for v in values) or "none"


if __name__ == "__main__":
    main()
