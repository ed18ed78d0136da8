"""Gather the slices a user points at: files, folders and zip archives, read safely.

A zip is read in memory, member by member, with limits: no absolute or `..` names, no nested
archives, a cap on the number of members and on the bytes they expand to. Anything else raises
`UnreadableInput` with a sentence that says what was wrong.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ml.errors import UserError

MAX_MEMBERS = 2000
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
SLICE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}


class UnreadableInput(UserError, ValueError):
    """An input that is not a slice, a folder of slices or a safe zip of them."""


@dataclass(frozen=True)
class SliceSource:
    name: str  # what the user calls it: a file name, or a path inside a zip
    data: bytes


def gather(paths: list[Path]) -> list[SliceSource]:
    """Every slice under the given files, folders and zips, in the order given (folders sorted)."""
    sources: list[SliceSource] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if _looks_like_slice(file.name):
                    name = file.relative_to(path).as_posix()
                    sources.append(SliceSource(name, file.read_bytes()))
        elif zipfile.is_zipfile(path):
            sources.extend(read_zip(path.read_bytes()))
        elif path.is_file():
            sources.append(SliceSource(path.name, path.read_bytes()))
        else:
            raise UnreadableInput(f"{path} does not exist")
    if not sources:
        raise UnreadableInput("no slices found in the given files")
    return sources


def read_zip(data: bytes) -> list[SliceSource]:
    """The slices inside a zip archive, refusing unsafe or oversized archives."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UnreadableInput("the file is not a readable zip archive") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_MEMBERS:
            raise UnreadableInput(f"the zip holds {len(members)} files; the limit is {MAX_MEMBERS}")
        total = sum(m.file_size for m in members)
        if total > MAX_TOTAL_BYTES:
            raise UnreadableInput("the zip expands to more than 1 GiB; split the study")
        sources = []
        for member in sorted(members, key=lambda m: m.filename):
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise UnreadableInput(f"the zip holds an unsafe path: {member.filename!r}")
            if name.suffix.lower() == ".zip":
                raise UnreadableInput("zips inside the zip are not accepted")
            if member.file_size > MAX_MEMBER_BYTES:
                raise UnreadableInput(f"{member.filename} is larger than 64 MiB")
            if name.name.startswith(".") or not _looks_like_slice(name.name):
                continue
            try:  # zipfile stops at the declared size and checks the CRC: a lying header fails
                content = archive.read(member)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise UnreadableInput(f"{member.filename} cannot be extracted ({exc})") from None
            sources.append(SliceSource(str(name), content))
    return sources


def _looks_like_slice(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in SLICE_SUFFIXES
