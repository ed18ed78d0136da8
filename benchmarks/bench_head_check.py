"""How often the "not an axial head CT" check fires: on real CT, on phantoms, on wrong inputs.

    python benchmarks/bench_head_check.py                        # phantoms and wrong inputs only
    python benchmarks/bench_head_check.py --real ctich=DIR --real phe-sich=DIR/images

Every PNG, JPEG and DICOM file under each `--real` folder is decoded as the app decodes an
upload (brain window) and checked. Phantoms are written for every size and format `ml synth`
offers. The wrong inputs are generated here, seeded: blank images, noise, gradients, a generated
photograph of a landscape, an 8000 x 8000 black image; and two kinds the check is known to let
pass (an object photographed on black, a bright blob fading to black), so that the table shows
its limits too. Prints the firing rate of each set, and every real slice it fired on.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ml import check_head_ct, read_slice, write_dataset

SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
PHANTOM_SIZES = (32, 64, 128, 256, 512)
SEEDS = range(5)


def encoded(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def blanks() -> Iterator[tuple[str, bytes]]:
    for level in (0, 128, 255):
        for side in (64, 512):
            for fmt in ("PNG", "JPEG"):
                yield (
                    f"blank {level} {side}px {fmt}",
                    encoded(np.full((side, side), level, np.uint8), fmt),
                )


def noise() -> Iterator[tuple[str, bytes]]:
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        yield f"uniform noise {seed}", encoded(rng.integers(0, 256, (512, 512), dtype=np.uint8))
        gauss = np.clip(rng.normal(128, 40, (512, 512)), 0, 255).astype(np.uint8)
        yield f"gaussian noise {seed}", encoded(gauss)


def gradients() -> Iterator[tuple[str, bytes]]:
    for side in (64, 512):
        ramp = np.linspace(0, 255, side)
        yield f"gradient left-right {side}px", encoded(np.tile(ramp, (side, 1)).astype(np.uint8))
        yield (
            f"gradient top-bottom {side}px",
            encoded(np.tile(ramp[:, None], (1, side)).astype(np.uint8)),
        )
        diagonal = (ramp[:, None] + ramp[None, :]) / 2
        yield f"gradient diagonal {side}px", encoded(diagonal.astype(np.uint8))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    coarse = rng.random((max(2, shape[0] // scale), max(2, shape[1] // scale)))
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def landscape(seed: int, height: int = 480, width: int = 640) -> np.ndarray:
    """A colour photograph-like landscape: sky, clouds, sun, mountains, a meadow, camera noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - rows) * np.array([70, 130, 210]) + rows * np.array([190, 215, 240])
    image = np.broadcast_to(sky, (height, width, 3)).astype(float).copy()
    clouds = np.clip(smooth_noise(rng, (height, width), 40) * 1.6 - 0.8, 0, 1)[..., None]
    image = image * (1 - clouds) + 245 * clouds
    ys, xs = np.mgrid[0:height, 0:width]
    sun = np.hypot(xs - rng.uniform(0.2, 0.8) * width, ys - 0.18 * height) < 0.05 * width
    image[sun] = (255, 240, 200)
    ridge = (
        0.45
        + 0.12 * smooth_noise(rng, (1, width), 80)[0]
        + 0.03 * smooth_noise(rng, (1, width), 8)[0]
    )
    mountain = ys > ridge[None, :] * height
    shade = smooth_noise(rng, (height, width), 16)[..., None]
    image = np.where(mountain[..., None], np.array([95, 100, 115]) * (0.7 + 0.6 * shade), image)
    meadow = ys > (0.72 + 0.03 * np.sin(xs / width * 6 + seed)) * height
    grass = np.array([60, 140, 50]) * (0.6 + 0.8 * smooth_noise(rng, (height, width), 3)[..., None])
    image = np.where(meadow[..., None], grass, image)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def photographs() -> Iterator[tuple[str, bytes]]:
    for seed in SEEDS:
        yield f"landscape photograph {seed} (colour JPEG)", encoded(landscape(seed), "JPEG")


def black_8000() -> Iterator[tuple[str, bytes]]:
    yield "black 8000 x 8000 PNG", encoded(np.zeros((8000, 8000), np.uint8))


def object_on_black() -> Iterator[tuple[str, bytes]]:
    """A textured, lit oval on a black background: a photographed object the check lets pass."""
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:480, 0:640]
        inside = ((xs - 320) / 160) ** 2 + ((ys - 240) / 120) ** 2 <= 1
        texture = 120 + 100 * smooth_noise(rng, (480, 640), 6)
        colour = np.stack([texture, texture * 0.6, texture * 0.3], axis=-1)
        image = np.where(inside[..., None], colour, 0).astype(np.uint8)
        yield f"object on black {seed}", encoded(image, "JPEG")


def bright_blob() -> Iterator[tuple[str, bytes]]:
    for side in (64, 512):
        ys, xs = np.mgrid[0:side, 0:side] / (side - 1) - 0.5
        blob = np.clip(255 * (1 - 2.2 * np.hypot(xs, ys)), 0, 255).astype(np.uint8)
        yield f"bright blob fading to black {side}px", encoded(blob)


WRONG: dict[str, Callable[[], Iterator[tuple[str, bytes]]]] = {
    "blank (black, grey, white; PNG, JPEG)": blanks,
    "noise (uniform, gaussian)": noise,
    "gradients (3 directions)": gradients,
    "generated landscape photograph": photographs,
    "black 8000 x 8000": black_8000,
}
KNOWN_MISSES = {
    "object photographed on black (known miss)": object_on_black,
    "bright blob fading to black (known miss)": bright_blob,
}


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def check_files(paths: list[Path]) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """(fired file, why) for each file the check fired on, and the smallest shares measured
    on the files it did not fire on."""
    fired, lowest = [], {"content_share": 1.0, "dark_edge_share": 1.0}
    for path in paths:
        check = check_head_ct(read_slice(path).pixels)
        if check.plausible:
            lowest = {k: min(v, check.measures[k]) for k, v in lowest.items()}
        else:
            fired.append((str(path), check.problem or ""))
    return fired, lowest


def row(name: str, total: int, fired: int, extra: str = "") -> None:
    rate = fired / total if total else float("nan")
    print(f"| {name} | {total:,} | {fired:,} | {rate:.2%} | {extra} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--real", action="append", default=[], metavar="NAME=DIR",
        help="a folder of real CT slices (repeatable)",
    )  # fmt: skip
    parser.add_argument("--show", type=int, default=50, help="fired real slices listed per set")
    args = parser.parse_args()
    print("| set | images | fired | rate | smallest shares where it did not fire |")
    print("|---|---|---|---|---|")
    listings = []
    for spec in args.real:
        name, _, folder = spec.partition("=")
        paths = files_under(Path(folder))
        start = time.perf_counter()
        fired, lowest = check_files(paths)
        per_slice = (time.perf_counter() - start) / max(1, len(paths)) * 1000
        shares = ", ".join(f"{k} {v:.4f}" for k, v in lowest.items())
        row(name, len(paths), len(fired), f"{shares}; {per_slice:.1f} ms/slice with decoding")
        listings.append((name, Path(folder), fired))
    with tempfile.TemporaryDirectory() as tmp:
        phantoms = Path(tmp)
        for size in PHANTOM_SIZES:
            write_dataset(phantoms / str(size), patients=8, slices_per_patient=8, size=size,
                          fmt="both", seed=size)  # fmt: skip
        paths = files_under(phantoms)
        fired, lowest = check_files(paths)
        shares = ", ".join(f"{k} {v:.4f}" for k, v in lowest.items())
        sizes = "/".join(str(s) for s in PHANTOM_SIZES)
        row(f"phantoms ({sizes} px, PNG and DICOM)", len(paths), len(fired), shares)
        listings.append(("phantoms", phantoms, fired))
    for name, make in {**WRONG, **KNOWN_MISSES}.items():
        checks = [check_head_ct(read_slice(data).pixels) for _, data in make()]
        fired = sum(not c.plausible for c in checks)
        most = max(c.measures["dark_edge_share"] for c in checks)
        row(name, len(checks), fired, f"largest dark_edge_share {most:.3f}")
    for name, folder, fired in listings:
        if fired:
            print(f"\n{name}: fired on {len(fired)} (first {args.show} shown)")
            for path, why in fired[: args.show]:
                print(f"  {Path(path).relative_to(folder)}: {why}")


if __name__ == "__main__":
    main()
