"""ml.data.inputs: files, folders and zips gathered safely."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ml.data.inputs import MAX_MEMBERS, UnreadableInput, gather, read_zip


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_folder_zip_and_file_are_gathered_in_order(tmp_path: Path) -> None:
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "b.png").write_bytes(b"B")
    (tmp_path / "series" / "a.dcm").write_bytes(b"A")
    (tmp_path / "series" / "notes.txt").write_text("skip me")
    (tmp_path / "study.zip").write_bytes(
        _zip({"s/2.png": b"2", "s/1.png": b"1", "__MACOSX/.x": b""})
    )
    (tmp_path / "one.jpg").write_bytes(b"J")
    sources = gather([tmp_path / "series", tmp_path / "study.zip", tmp_path / "one.jpg"])
    assert [s.name for s in sources] == ["a.dcm", "b.png", "s/1.png", "s/2.png", "one.jpg"]
    assert sources[2].data == b"1"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../evil.png": b"x"}, "unsafe path"),
        ({"/etc/evil.png": b"x"}, "unsafe path"),
        ({"inner.zip": b"PK"}, "zips inside"),
    ],
)
def test_unsafe_zips_are_refused(members: dict[str, bytes], message: str) -> None:
    with pytest.raises(UnreadableInput, match=message):
        read_zip(_zip(members))


def test_too_many_members_and_not_a_zip() -> None:
    many = {f"{i}.png": b"x" for i in range(MAX_MEMBERS + 1)}
    with pytest.raises(UnreadableInput, match="limit"):
        read_zip(_zip(many))
    with pytest.raises(UnreadableInput, match="not a readable zip"):
        read_zip(b"PK\x03\x04 but not really")


def test_a_member_whose_header_lies_about_its_size_is_refused() -> None:
    data = bytearray(_zip({"a.png": b"A" * 10_000}))
    # Shrink the declared size in the central directory: extraction must notice, not trust it.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")
    with pytest.raises(UnreadableInput):
        read_zip(bytes(data))


def test_nothing_found_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInput, match="does not exist"):
        gather([tmp_path / "nope.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableInput, match="no slices"):
        gather([tmp_path / "empty"])
