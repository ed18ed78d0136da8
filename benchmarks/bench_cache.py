"""Decoded-slice cache against decoding every file each epoch: prints the measured ratio.

    python benchmarks/bench_cache.py                      # synthetic phantoms in a temp folder
    python benchmarks/bench_cache.py --data DATASET_DIR   # e.g. a real class-folder dataset

"plain" is what a loader without a cache does each epoch: read the file, decode it, window and
resize it. "cached" reads the same pixels from the memory-mapped array that `ml train` builds
once. Both produce identical arrays (checked), so the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ml import BRAIN_WINDOW, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX, read_slice, write_dataset
from ml.data import decode_all, load_dataset, to_square


def plain_epoch(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([to_square(read_slice(p).pixels, size) for p in paths])


def cached_epoch(images: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(images[i]) for i in range(len(images))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset folder (default: 40 synthetic patients)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "phantoms"
            write_dataset(data, patients=40, slices_per_patient=8, size=512, fmt="png", seed=0)
        dataset = load_dataset(data, DEFAULT_CLASS_MAP, DEFAULT_PATIENT_REGEX)
        paths = [r.path for r in dataset.records]

        def decode():
            return decode_all(
                paths,
                image_size=args.image_size,
                windows=(BRAIN_WINDOW,),
                png16_hu_offset=-1024.0,
                cache_dir=Path(tmp) / "cache",
                progress=False,
            )

        start = time.perf_counter()
        decode()
        build = time.perf_counter() - start
        decoded = decode()  # a later run: hashes the files, then memory-maps the array
        plain_times, cached_times = [], []
        for _ in range(args.epochs):
            start = time.perf_counter()
            plain = plain_epoch(paths, args.image_size)
            plain_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            cached = cached_epoch(decoded.images)
            cached_times.append(time.perf_counter() - start)
        if not np.array_equal(plain, cached):
            raise SystemExit("cached and freshly decoded pixels differ: the benchmark is invalid")
    plain_s, cached_s = float(np.median(plain_times)), float(np.median(cached_times))
    print(f"slices: {len(paths)} at {args.image_size} px, epochs timed: {args.epochs}")
    print(f"plain decode per epoch: {plain_s:.3f} s")
    print(f"cached read per epoch:  {cached_s:.4f} s (one-off cache build {build:.2f} s)")
    print(f"ratio plain/cached: {plain_s / cached_s:.1f}x")


if __name__ == "__main__":
    main()
