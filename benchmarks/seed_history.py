"""Fill a deployment's database with N synthetic results, to measure the history under load.

    DATABASE_URL=sqlite:///bench.sqlite3 python benchmarks/seed_history.py --count 10000

Uses the app's own configuration (the same environment variables as `make run`) and its
migrated schema. Rows are made as the web app makes them (a prediction with its slices, the
active bundle's provenance), spread over the last 90 days, a tenth of them studies. Every row
is named `seed-<n>`, so they can be found and told apart from real uploads; they all point at
one small stored PNG, so the history, detail and image pages work on them. Never run it on a
database that holds real results.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from datetime import timedelta

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from webapp import create_app

    app = create_app()
    with app.app_context():
        started = time.perf_counter()
        made = seed(args.count, args.seed)
        print(f"seeded {made} results in {time.perf_counter() - started:.1f} s")


def seed(count: int, seed: int = 0) -> int:
    """Add `count` results in batches; returns how many were added."""
    from webapp import storage
    from webapp.bundles.store import active_bundle, register
    from webapp.extensions import db
    from webapp.models import Prediction, SliceResult, now

    bundle, problem = active_bundle()
    if bundle is None:
        raise SystemExit(f"no model bundle is loaded ({problem}); run `make demo` first")
    register(bundle)
    rng = random.Random(seed)
    stored = _stored_slice(storage)
    start = now() - timedelta(days=90)
    for first in range(0, count, 1000):
        rows = []
        for n in range(first, min(first + 1000, count)):
            slices = 1 if rng.random() < 0.9 else rng.randint(2, 30)
            probabilities = [rng.random() for _ in range(slices)]
            score = float(np.mean(probabilities))
            label = "Stroke" if score >= 0.5 else "Normal"
            rows.append(
                Prediction(
                    created_at=start + timedelta(seconds=n * 90 * 86400 / max(count, 1)),
                    kind="slice" if slices == 1 else "study",
                    name=f"seed-{n}" + (".png" if slices == 1 else f" (study of {slices})"),
                    content_sha256=f"{n:064x}",
                    bundle_id=bundle.id,
                    bundle_name=bundle.name,
                    operating_point="youden",
                    threshold=0.5,
                    preprocessing={"seeded": True},
                    app_version="seed",
                    score=score,
                    label=label,
                    uncertain=abs(score - 0.5) < 0.05,
                    uncertain_reasons=[],
                    aggregation=None if slices == 1 else "mean",
                    order_by=None if slices == 1 else "file_name",
                    note="" if rng.random() < 0.8 else f"seeded note {n}",
                    slices=[
                        SliceResult(
                            position=i,
                            original_name=f"seed-{n}-{i}.png",
                            stored_name=stored,
                            file_format="png",
                            content_sha256=f"{n:064x}",
                            probability=p,
                            fold_probabilities=[p] * 5,
                            fold_std=0.0,
                            view_std=0.0,
                            label="Stroke" if p >= 0.5 else "Normal",
                            uncertain=False,
                            uncertain_reasons=[],
                            info={"format": "png"},
                        )
                        for i, p in enumerate(probabilities)
                    ],
                )
            )
        db.session.add_all(rows)
        db.session.commit()
    return count


def _stored_slice(storage) -> str:
    """One small grey PNG in the upload folder, shared by every seeded slice."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(buffer, format="PNG")
    name = storage.store(buffer.getvalue(), "png")
    storage.publish(name)
    return name


if __name__ == "__main__":
    main()
