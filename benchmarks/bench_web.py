"""The web app under load: gunicorn workers, concurrent clients, and a check that nothing is lost.

    python benchmarks/bench_web.py                          # 8 clients, 60 s, 4 workers
    python benchmarks/bench_web.py --clients 8 --duration 60 --seed-count 10000

On a fresh temporary database and upload folder (nothing of a deployment is touched):
1. migrate, seed `--seed-count` synthetic results (benchmarks/seed_history.py), make an API token;
2. start gunicorn with `--workers` workers on loopback, serving the bundle `--bundle`
   (default bundles/demo: run `make demo` first);
3. mixed phase: `--clients` threads for `--duration` seconds, each posting a slice to
   /api/v1/predict (a third of its requests) or reading a history page in the browser's HTML
   (/history, the first pages, with and without a filter);
4. history phase: `--history-clients` clients (default: as many) only read history for
   `--history-duration` seconds, the measure of "history p95 under 100 ms with 10 000 results";
5. check every upload the server accepted (201 with an id): its row is in the database exactly
   once, with every slice's file on disk, and nothing else was stored under the bench's names.
The last line reads `requests=<n> errors=<n> lost=<n> duplicated=<n> p95_ms=<x>` for the mixed
phase; the line before it gives the history phase.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HISTORY_QUERIES = ["", "page=2", "label=Stroke", "q=seed-12", "uncertain=yes&page=3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="mixed phase, seconds")
    parser.add_argument("--history-duration", type=float, default=20.0)
    parser.add_argument("--history-clients", type=int, help="history phase (default: --clients)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--seed-count", type=int, default=10_000)
    parser.add_argument("--bundle-dir", type=Path, default=ROOT / "bundles")
    parser.add_argument("--bundle", default="demo")
    args = parser.parse_args()
    from ml import BundleError, load_bundle

    try:
        load_bundle(args.bundle_dir / args.bundle)
    except BundleError as exc:
        raise SystemExit(f"{exc}\n(run `make demo` for the demo bundle)") from None
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        env = _environment(Path(tmp), args)
        _prepare(env, args.seed_count)
        token = _token(env)
        port = _free_port()
        server = _gunicorn(env, port, args.workers)
        try:
            _wait_healthy(port)
            bench = Bench(port, token)
            mixed = bench.run(args.clients, args.duration, upload_share=1 / 3)
            readers = args.history_clients or args.clients
            history = bench.run(readers, args.history_duration, upload_share=0.0)
        finally:
            server.terminate()
            server.wait(timeout=30)
        lost, duplicated, missing_files, strays = _check(Path(tmp), bench.accepted)
    _report(args, mixed, history, bench, lost, duplicated, missing_files, strays)


class Bench:
    """Clients that post slices and read history; keeps every latency and accepted upload."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.accepted: dict[str, int] = {}  # upload name -> prediction id
        self.lock = threading.Lock()
        self.counter = 0

    def run(self, clients: int, seconds: float, upload_share: float) -> dict[str, list]:
        timings: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        stop = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self._client, args=(i, stop, upload_share, timings, errors))
            for i in range(clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"timings": timings, "errors": errors, "wall": time.monotonic() - started}

    def _client(self, index: int, stop: float, upload_share: float, timings, errors) -> None:
        rng = np.random.default_rng(index)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        while time.monotonic() < stop:
            upload = rng.random() < upload_share
            kind = "upload" if upload else "history"
            started = time.perf_counter()
            try:
                status = self._upload(connection, rng) if upload else self._history(connection, rng)
            except (OSError, http.client.HTTPException) as exc:
                status = f"{type(exc).__name__}: {exc}"
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            elapsed = (time.perf_counter() - started) * 1000
            with self.lock:
                timings[kind].append(elapsed)
                if status not in (200, 201):
                    errors.append(f"{kind}: {status}")
        connection.close()

    def _upload(self, connection: http.client.HTTPConnection, rng) -> int:
        with self.lock:
            self.counter += 1
            name = f"bench-{self.counter}.png"
        body, content_type = _multipart({"files": (name, _slice_png(rng))})
        connection.request(
            "POST",
            "/api/v1/predict",
            body=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {self.token}"},
        )
        response = connection.getresponse()
        payload = response.read()
        if response.status == 201:
            with self.lock:
                self.accepted[name] = json.loads(payload)["id"]
        return response.status

    def _history(self, connection: http.client.HTTPConnection, rng) -> int:
        query = HISTORY_QUERIES[int(rng.integers(len(HISTORY_QUERIES)))]
        connection.request("GET", "/history" + (f"?{query}" if query else ""))
        response = connection.getresponse()
        page = response.read()
        if response.status == 200 and b"<tbody" not in page:
            return -1  # a page without result rows did not read the history
        return response.status


def _environment(tmp: Path, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
            "UPLOAD_DIR": str(tmp / "uploads"),
            "CACHE_DIR": str(tmp / "cache"),
            "BUNDLE_DIR": str(args.bundle_dir.resolve()),
            "ACTIVE_BUNDLE": args.bundle,
            "SECRET_KEY": secrets.token_hex(32),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",  # one thread per worker: the workers share the cores
            "JOB_QUEUE": "thread",
        }
    )
    return env


def _flask(env: dict[str, str], *command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"flask {' '.join(command)} failed:\n{done.stderr}")
    return done.stdout


def _prepare(env: dict[str, str], seed_count: int) -> None:
    _flask(env, "db", "upgrade")
    if seed_count:
        script = ROOT / "benchmarks" / "seed_history.py"
        subprocess.run(
            [sys.executable, str(script), "--count", str(seed_count)],
            cwd=ROOT,
            env=env,
            check=True,
        )


def _token(env: dict[str, str]) -> str:
    lines = _flask(env, "tokens", "create", "bench", "--scope", "read", "--scope", "write")
    return lines.splitlines()[1].strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gunicorn(env: dict[str, str], port: int, workers: int) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
    return subprocess.Popen(
        [*command, "--timeout", "120", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_healthy(port: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/v1/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become healthy")


def _slice_png(rng) -> bytes:
    """A 256 px phantom-like slice, different every time (so every upload is its own)."""
    size = 256
    y, x = np.mgrid[:size, :size]
    head = ((x - 128) ** 2 / 100**2 + (y - 128) ** 2 / 115**2) < 1
    pixels = np.where(head, 70 + rng.normal(0, 8, (size, size)), 0)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = []
    for field, (name, content) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{name}"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + content
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def _check(tmp: Path, accepted: dict[str, int]) -> tuple[int, int, int, int]:
    """(lost, duplicated, accepted uploads missing a file, stored rows never acknowledged)."""
    database = sqlite3.connect(tmp / "bench.sqlite3")
    rows = database.execute(
        "SELECT p.id, p.name, s.stored_name FROM predictions p "
        "JOIN prediction_slices s ON s.prediction_id = p.id WHERE p.name LIKE 'bench-%'"
    ).fetchall()
    database.close()
    by_name: dict[str, set[int]] = defaultdict(set)
    files: dict[int, list[str]] = defaultdict(list)
    for prediction_id, name, stored_name in rows:
        by_name[name].add(prediction_id)
        files[prediction_id].append(stored_name)
    lost = sum(1 for name, pid in accepted.items() if pid not in by_name.get(name, set()))
    duplicated = sum(1 for name in accepted if len(by_name.get(name, ())) > 1)
    uploads = tmp / "uploads"
    missing = sum(
        1
        for pid in accepted.values()
        for stored in files.get(pid, [])
        if not (uploads / stored[:2] / stored).is_file()
    )
    strays = len(set(by_name) - set(accepted))
    return lost, duplicated, missing, strays


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _report(args, mixed, history, bench, lost, duplicated, missing, strays) -> None:
    print(
        f"{args.clients} clients, {args.workers} gunicorn workers, {args.seed_count} seeded "
        f"results, bundle {args.bundle}"
    )
    for title, phase in (("mixed", mixed), ("history only", history)):
        total = sum(len(v) for v in phase["timings"].values())
        print(f"{title}: {total} requests in {phase['wall']:.1f} s ({total / phase['wall']:.1f}/s)")
        for kind, values in sorted(phase["timings"].items()):
            print(
                f"  {kind:8s} n={len(values):5d} p50={_percentile(values, 50):7.1f} ms "
                f"p95={_percentile(values, 95):7.1f} ms max={max(values):7.1f} ms"
            )
        for message in sorted(set(phase["errors"]))[:10]:
            print(f"  error: {message}")
    print(
        f"accepted uploads {len(bench.accepted)}: lost {lost}, duplicated {duplicated}, "
        f"missing files {missing}, stored but never acknowledged {strays}"
    )
    history_values = history["timings"]["history"]
    print(
        f"history_clients={args.history_clients or args.clients} "
        f"history_requests={len(history_values)} history_errors={len(history['errors'])} "
        f"history_p95_ms={_percentile(history_values, 95):.1f}"
    )
    all_mixed = [v for values in mixed["timings"].values() for v in values]
    print(
        f"requests={len(all_mixed)} errors={len(mixed['errors'])} lost={lost} "
        f"duplicated={duplicated} p95_ms={_percentile(all_mixed, 95):.1f}"
    )


if __name__ == "__main__":
    main()
