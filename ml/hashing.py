"""Content hashes: the identity of files, datasets and bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_lines(lines: list[str]) -> str:
    """One digest for an ordered list of strings (e.g. file hashes)."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
