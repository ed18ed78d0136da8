"""Fuzzing the upload decoder: any bytes either decode to a sane slice or raise UnreadableImage.

Hypothesis mutates valid PNG, JPEG and DICOM slices (bit flips, truncation, splices, inserted
junk, rewritten headers) and feeds raw bytes; the number of cases is bounded so CI stays fast.
Any other exception (or a crash of the process) is a bug: the web app turns UnreadableImage
into a clear 4xx answer and would turn anything else into a 500.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ml.data.inputs import UnreadableInput, read_zip
from ml.data.readers import UnreadableImage, read_slice
from ml.data.synth import write_ct_dicom

CASES = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same cases on every run: a CI failure can be replayed
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 4096 * 4096  # a small pixel limit keeps accidental huge images fast to refuse


def _seeds(tmp_dir) -> list[bytes]:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, size=(40, 48), dtype=np.uint8)
    seeds = []
    for fmt, image in (
        ("PNG", Image.fromarray(grey)),
        ("PNG", Image.fromarray(grey.astype(np.uint16) * 200)),  # 16-bit
        ("PNG", Image.fromarray(np.dstack([grey] * 4))),  # RGBA
        ("JPEG", Image.fromarray(grey)),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        seeds.append(buffer.getvalue())
    path = tmp_dir / "slice.dcm"
    write_ct_dicom(path, np.full((40, 48), 40, dtype=np.int16), patient_id="F1", instance_number=1)
    ds = pydicom.dcmread(path)  # fixed UIDs: the same seed bytes, so the same cases, every run
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if keyword in ds:
            setattr(ds, keyword, "1.2.826.0.1.3680043.10.1099.7")
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1099.7"
    ds.save_as(path)
    seeds.append(path.read_bytes())
    return seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return _seeds(tmp_path_factory.mktemp("seeds"))


def _check(data: bytes) -> None:
    try:
        decoded = read_slice(data, max_pixels=LIMIT)
    except UnreadableImage as exc:
        assert str(exc)  # every refusal says why
        return
    pixels = decoded.pixels
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] >= 1
    assert pixels.shape[0] * pixels.shape[1] <= LIMIT
    assert decoded.format in ("png", "jpeg", "dicom")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "splice"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "overwrite":  # header fields: sizes, tags, lengths
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[position : position + len(chunk)] = chunk
        else:
            other = draw(st.sampled_from(seeds))
            data[position:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


def test_the_seeds_decode(seeds: list[bytes]) -> None:
    """Otherwise the mutations below would start from files that fail anyway."""
    for data in seeds:
        assert read_slice(data, max_pixels=LIMIT).pixels.size > 0


def test_mutated_slices_decode_or_are_refused(seeds: list[bytes]) -> None:
    @CASES
    @given(mutated(seeds))
    def run(data: bytes) -> None:
        _check(data)

    run()


@CASES
@given(st.binary(max_size=512))
def test_random_bytes_are_refused(data: bytes) -> None:
    _check(data)


@CASES
@given(st.binary(max_size=300), st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b""]))
def test_a_valid_signature_on_junk_is_refused(tail: bytes, head: bytes) -> None:
    data = head + tail if head else bytes(128) + b"DICM" + tail
    with pytest.raises(UnreadableImage):
        read_slice(data, max_pixels=LIMIT)


def test_zip_archives_of_mutated_members_never_crash(seeds: list[bytes]) -> None:
    @CASES
    @given(mutated(seeds), st.integers(0, 200))
    def run(member: bytes, cut: int) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("a/1.png", member)
        data = buffer.getvalue()
        data = data[: len(data) - cut] if cut else data
        try:
            sources = read_zip(data)
        except UnreadableInput as exc:
            assert str(exc)
            return
        for source in sources:
            _check(source.data)

    run()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00KS"),  # an unknown VR (NotImplementedError)
        (b"\x28\x00\x10\x00US", b"\x28\x00\x10\x00UL"),  # Rows: 2 bytes read as 4
    ],
)
def test_dicom_tags_the_fuzzer_broke_are_refused(
    seeds: list[bytes], old: bytes, new: bytes
) -> None:
    """Cases the fuzzer found (run longer than in CI), kept as plain regressions."""
    dicom = seeds[-1]
    assert old in dicom
    with pytest.raises(UnreadableImage, match="DICOM file is damaged"):
        read_slice(dicom.replace(old, new, 1), max_pixels=LIMIT)
