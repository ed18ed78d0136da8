"""Deterministic synthetic head-CT phantoms: a demo data set and test images, no downloads.

A phantom patient is a short stack of axial slices in Hounsfield units (HU): air, an elliptical
skull, grey and white matter, two mirrored lateral ventricles, a smooth texture and noise. A stroke
patient carries one lesion, a hyperdense bleed or a hypodense infarct, on a contiguous run of its
slices; its other slices look normal but keep the stroke label, as in the real data sets, where
every slice carries its patient's label.

`write_dataset` lays the slices out like the data users download (`Normal/3 (2).png`,
`Stroke/7 (1).png`) and records every lesion's bounding box in `lesions.json`, so that tests can
check where Grad-CAM looks. `origin.json` says that the images are synthetic phantoms; the trainer
records it, so a bundle trained on them says everywhere that it knows nothing about real CT. Every
random draw is seeded from `seed` and the patient number, and no clock is read, so the same
arguments give byte-identical files. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DS

from ml.config import ORIGIN_FILE, SYNTHETIC_ORIGIN
from ml.data.readers import BRAIN_WINDOW, apply_windows

CLASS_NAMES = ("Normal", "Stroke")
FORMATS = ("png", "dicom", "both")
LESION_KINDS = ("bleed", "infarct")
MIN_SIZE = 32

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.2.826.0.1.3680043.10.1099."
IMPLEMENTATION_CLASS_UID = UID_ROOT + "0.1"
FIELD_OF_VIEW_MM = 230.0
SLICE_THICKNESS_MM = 5.0
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")

AIR_HU = -1000.0
BONE_DIPLOE_HU = 850.0  # spongy middle layer of the skull
BONE_TABLE_HU = 1350.0  # dense inner and outer tables
GREY_HU = (36.0, 41.0)
WHITE_HU = (24.0, 29.0)
CSF_HU = (3.0, 8.0)
BLEED_HU = (58.0, 82.0)  # lesion core; the radial gradient adds +-4 HU, staying inside 50-90
INFARCT_HU = (13.0, 19.0)  # lesion core; the gradient adds +-2 HU, staying inside 10-25
NOISE_SIGMA_HU = (3.0, 5.0)

LESION_PEAK_DIAMETER = (0.08, 0.12)  # fraction of the brain diameter at the lesion's largest
LESION_MIN_RADIUS_PX = 1.5  # keeps a lesion on tiny test images at least a few pixels


@dataclass(frozen=True)
class PhantomSlice:
    hu: np.ndarray  # float32 (size, size) Hounsfield units
    lesion_mask: np.ndarray  # bool (size, size); all False where the slice shows no lesion
    lesion_kind: str | None  # "bleed" | "infarct" where the mask is not empty, else None


@dataclass(frozen=True)
class _Anatomy:
    """One patient's head: everything that stays the same from slice to slice."""

    centre: tuple[float, float]  # x, y in pixels
    angle: float  # in-plane rotation, radians
    half_width: float  # skull's outer semi-axis left-right, pixels, on the widest slice
    half_length: float  # skull's outer semi-axis front-back
    skull_px: float
    grey_hu: float
    white_hu: float
    csf_hu: float
    ventricle_scale: float
    noise_sigma: float
    gyri: tuple[float, float]  # phases of the wavy grey/white border
    texture: tuple[tuple[float, float, float, float, float], ...]  # fx, fy, phase, drift, amp


@dataclass(frozen=True)
class _Lesion:
    kind: str
    core_hu: float
    gradient_hu: float  # centre minus rim, spread over the radius
    centre: tuple[float, float]  # in brain-normalised coordinates (1 = inner skull)
    drift: tuple[float, float]  # centre shift per slice, brain-normalised
    peak_radius_px: float
    harmonics: tuple[tuple[int, float, float, float], ...]  # order, amplitude, phase, twist
    first: int  # index of the first slice with the lesion
    length: int


def phantom_patient(
    rng: np.random.Generator, *, n_slices: int, size: int, stroke: bool
) -> list[PhantomSlice]:
    """Slices 1..n_slices of one phantom head, top to bottom, with a lesion if `stroke`.

    Anatomy, lesion and noise come from three generators split off `rng` in a fixed order, so a
    stroke patient and a normal patient built from equal generators share anatomy and noise and
    differ only inside the lesion mask.
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be at least 1, got {n_slices}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    anatomy_rng, lesion_rng, noise_rng = (
        np.random.default_rng(int(s)) for s in rng.integers(0, 2**63, size=3)
    )
    anatomy = _draw_anatomy(anatomy_rng, size)
    lesion = _draw_lesion(lesion_rng, anatomy, n_slices) if stroke else None
    u, v = _head_coordinates(anatomy, size)
    return [
        _render_slice(anatomy, lesion, u, v, index, n_slices, noise_rng)
        for index in range(n_slices)
    ]


def window_to_uint8(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map HU linearly onto 0..255 over [level - width/2, level + width/2], clipping outside.

    The reader's own windowing, so a PNG written here decodes to the pixels a DICOM of the same
    slice gives.
    """
    return apply_windows(np.asarray(hu), ((level, width),))[..., 0]


def write_ct_dicom(
    path: Path,
    hu: np.ndarray,
    *,
    patient_id: str,
    instance_number: int,
    slice_position_mm: float = 0.0,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = -1024.0,
    with_pixels: bool = True,
    seed: int = 0,
) -> None:
    """Write one slice as a DICOM Part 10 CT image (Explicit VR Little Endian, signed 16 bit).

    Stored values are round((hu - intercept) / slope), so the modality LUT gives HU back.
    MONOCHROME1 only flags that viewers show the grey scale inverted; the data stay HU-encoded.
    `modality` and `with_pixels=False` exist to build files that readers must refuse. UIDs derive
    from seed, patient and instance, never from the clock.
    """
    hu = np.asarray(hu)
    if hu.ndim != 2:
        raise ValueError(f"hu must be one 2-D slice, got an array of shape {hu.shape}")
    if photometric not in PHOTOMETRICS:
        raise ValueError(f"photometric must be one of {', '.join(PHOTOMETRICS)}, got {photometric}")
    if slope == 0 or not math.isfinite(slope) or not math.isfinite(intercept):
        raise ValueError(
            f"slope must be finite and non-zero, got slope={slope} intercept={intercept}"
        )
    rows, columns = hu.shape
    sop_uid = _uid(seed, patient_id, "instance", instance_number)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(seed, patient_id, "study")
    ds.SeriesInstanceUID = _uid(seed, patient_id, "series")
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.Modality = modality
    ds.Manufacturer = "ctstroke synthetic phantom"
    ds.ImageComments = "Synthetic phantom, not a patient"
    ds.PatientName = f"Phantom^{patient_id}"
    ds.PatientID = str(patient_id)
    ds.BodyPartExamined = "HEAD"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number)
    ds.ImagePositionPatient = [_ds(0.0), _ds(0.0), _ds(slice_position_mm)]
    ds.ImageOrientationPatient = [_ds(x) for x in (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)]
    ds.PixelSpacing = [_ds(FIELD_OF_VIEW_MM / rows), _ds(FIELD_OF_VIEW_MM / columns)]
    ds.SliceThickness = _ds(SLICE_THICKNESS_MM)
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = _ds(slope)
    ds.RescaleIntercept = _ds(intercept)
    ds.WindowCenter = _ds(BRAIN_WINDOW[0])
    ds.WindowWidth = _ds(BRAIN_WINDOW[1])
    if with_pixels:
        stored = np.rint((hu.astype(np.float64) - intercept) / slope)
        stored = np.clip(stored, -32768, 32767).astype("<i2")
        ds.add_new(0x7FE00010, "OW", stored.tobytes())
    pydicom.dcmwrite(Path(path), ds, enforce_file_format=True)


def write_dataset(
    out: Path,
    *,
    patients: int,
    slices_per_patient: int = 8,
    size: int = 256,
    fmt: str = "png",
    seed: int = 0,
) -> dict:
    """Write a phantom data set in the class-folder layout users download; return a summary.

    Patients 1..n_normal are normal and the next patients // 2 numbers have a stroke, so ids are
    unique across classes. `fmt="png"` writes 8-bit brain-window PNGs, `"dicom"` writes HU-encoded
    DICOM, `"both"` writes the same slices under `out/png` and `out/dicom`. Each root gets a
    `lesions.json` with the bounding box of every lesion and an `origin.json` that says the
    images are synthetic. Class folders must be new or empty, so
    slices of an earlier, larger run cannot linger among the new ones.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    if seed < 0:
        raise ValueError(f"seed must be zero or positive, got {seed}")
    out = Path(out)
    suffixes = {"png": ".png", "dicom": ".dcm"}
    kinds = ("png", "dicom") if fmt == "both" else (fmt,)
    roots = {kind: out / kind for kind in kinds} if fmt == "both" else {fmt: out}
    for kind in kinds:
        _prepare_class_folders(roots[kind])

    n_stroke = patients // 2
    n_normal = patients - n_stroke
    lesions: list[dict] = []
    slices = {name: 0 for name in CLASS_NAMES}
    files_written = 0
    for number in range(1, patients + 1):
        stroke = number > n_normal
        class_name = CLASS_NAMES[int(stroke)]
        stack = phantom_patient(
            _patient_rng(seed, number), n_slices=slices_per_patient, size=size, stroke=stroke
        )
        for k, phantom in enumerate(stack, start=1):
            stem = f"{class_name}/{number} ({k})"
            for kind in kinds:
                _write_slice(
                    roots[kind] / f"{stem}{suffixes[kind]}", phantom, kind, number, k, seed
                )
                files_written += 1
            slices[class_name] += 1
            if phantom.lesion_kind is not None:
                lesions.append(_lesion_record(stem, number, k, phantom))

    for kind in kinds:
        _write_lesions_json(roots[kind], lesions, suffixes[kind], seed, size, slices_per_patient)
        _write_origin_json(roots[kind])
        files_written += 2
    return {
        "format": fmt,
        "roots": [str(roots[kind]) for kind in kinds],
        "patients": {"Normal": n_normal, "Stroke": n_stroke},
        "patient_ids": {
            "Normal": list(range(1, n_normal + 1)),
            "Stroke": list(range(n_normal + 1, patients + 1)),
        },
        "slices": slices,
        "lesion_slices": len(lesions),
        "files_written": files_written,
    }


def _patient_rng(seed: int, patient_number: int) -> np.random.Generator:
    """The generator `write_dataset` gives a patient; tests rebuild phantoms with it."""
    return np.random.default_rng([seed, patient_number])


def _draw_anatomy(rng: np.random.Generator, size: int) -> _Anatomy:
    half_width = size * rng.uniform(0.30, 0.34)
    texture = tuple(
        (
            rng.uniform(0.5, 2.0),
            rng.uniform(0.5, 2.0),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(-0.4, 0.4),
            rng.uniform(0.4, 0.8),
        )
        for _ in range(3)
    )
    return _Anatomy(
        centre=(
            (size - 1) / 2 + size * rng.uniform(-0.04, 0.04),
            (size - 1) / 2 + size * rng.uniform(-0.04, 0.04),
        ),
        angle=math.radians(rng.uniform(-8.0, 8.0)),
        half_width=half_width,
        half_length=half_width * rng.uniform(1.10, 1.22),
        skull_px=max(2.0, size * rng.uniform(0.022, 0.030)),
        grey_hu=rng.uniform(*GREY_HU),
        white_hu=rng.uniform(*WHITE_HU),
        csf_hu=rng.uniform(*CSF_HU),
        ventricle_scale=rng.uniform(0.8, 1.3),
        noise_sigma=rng.uniform(*NOISE_SIGMA_HU),
        gyri=(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)),
        texture=texture,
    )


def _draw_lesion(rng: np.random.Generator, anatomy: _Anatomy, n_slices: int) -> _Lesion:
    """One lesion on a contiguous run of about half to most of the slices, placed in parenchyma."""
    kind = LESION_KINDS[int(rng.integers(0, 2))]
    core_hu = rng.uniform(*(BLEED_HU if kind == "bleed" else INFARCT_HU))
    shortest = max(1, math.ceil(n_slices / 2))
    longest = max(shortest, n_slices - 1)
    length = int(rng.integers(shortest, longest + 1))
    first = int(rng.integers(0, n_slices - length + 1))

    brain_a = anatomy.half_width - anatomy.skull_px
    brain_b = anatomy.half_length - anatomy.skull_px
    diameter = 2.0 * math.sqrt(brain_a * brain_b)
    peak_radius = max(LESION_MIN_RADIUS_PX, 0.5 * diameter * rng.uniform(*LESION_PEAK_DIAMETER))
    harmonics = tuple(
        (order, rng.uniform(0.08, 0.18), rng.uniform(0, 2 * math.pi), rng.uniform(-0.3, 0.3))
        for order in (2, 3, 5)
    )
    reach = peak_radius * (1.0 + sum(h[1] for h in harmonics)) / min(brain_a, brain_b)
    return _Lesion(
        kind=kind,
        core_hu=core_hu,
        gradient_hu=8.0 if kind == "bleed" else 4.0,
        centre=_lesion_centre(rng, anatomy, reach),
        drift=(rng.uniform(-0.012, 0.012), rng.uniform(-0.012, 0.012)),
        peak_radius_px=peak_radius,
        harmonics=harmonics,
        first=first,
        length=length,
    )


def _lesion_centre(
    rng: np.random.Generator, anatomy: _Anatomy, reach: float
) -> tuple[float, float]:
    """A point in one hemisphere, off the midline, clear of the ventricles and of the skull.

    `reach` is the lesion's largest radius in brain-normalised units; the ventricles are taken at
    their largest, so the lesion never has to be cut around them by much.
    """
    centre_u, centre_v, half_u, half_v, _ = _ventricle_shape(anatomy.ventricle_scale)
    outer = min(0.70, 0.92 - reach)
    for _ in range(1000):
        u, v = rng.uniform(-outer, outer, size=2)
        radius = math.hypot(u, v)
        if not 0.25 <= radius <= outer or abs(u) < 0.15:
            continue
        clear = all(
            ((u - side * centre_u) / (half_u + reach)) ** 2
            + ((v - centre_v) / (half_v + reach)) ** 2
            > 1.0
            for side in (-1.0, 1.0)
        )
        if clear:
            return float(u), float(v)
    raise RuntimeError("no place for a lesion found; the phantom's proportions are inconsistent")


def _ventricle_shape(scale: float) -> tuple[float, float, float, float, float]:
    """Centre (u, v), semi-axes (u, v) at the widest slice, and tilt of the right ventricle."""
    return 0.16, -0.04, 0.075 * scale, 0.20 * scale, math.radians(18.0)


def _head_coordinates(anatomy: _Anatomy, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grid in the head's own frame: u left-right, v front-back, in pixels from the centre."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx = xs - anatomy.centre[0]
    dy = ys - anatomy.centre[1]
    cos, sin = math.cos(anatomy.angle), math.sin(anatomy.angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy


def _slice_depth(index: int, n_slices: int) -> float:
    """-1 at the top slice, +1 at the bottom, 0 in the middle."""
    return 0.0 if n_slices == 1 else -1.0 + 2.0 * index / (n_slices - 1)


def _render_slice(
    anatomy: _Anatomy,
    lesion: _Lesion | None,
    u: np.ndarray,
    v: np.ndarray,
    index: int,
    n_slices: int,
    noise_rng: np.random.Generator,
) -> PhantomSlice:
    depth = _slice_depth(index, n_slices)
    scale = math.sqrt(1.0 - 0.55 * depth * depth)  # the head narrows towards top and bottom
    outer_a = anatomy.half_width * scale
    outer_b = anatomy.half_length * scale
    brain_a = outer_a - anatomy.skull_px
    brain_b = outer_b - anatomy.skull_px
    outer_radius = np.sqrt((u / outer_a) ** 2 + (v / outer_b) ** 2)
    un, vn = u / brain_a, v / brain_b
    brain_radius = np.sqrt(un**2 + vn**2)
    brain = brain_radius <= 1.0
    skull = (outer_radius <= 1.0) & ~brain

    hu = np.full(u.shape, AIR_HU, dtype=np.float32)
    hu[skull] = _bone_hu(outer_radius[skull], 0.5 * (outer_a + outer_b), anatomy.skull_px)
    tissue = _parenchyma_hu(anatomy, un, vn, brain_radius, index)
    csf = brain & _csf_mask(anatomy, un, vn, brain_radius, brain_a, depth)
    hu[brain] = tissue[brain]
    hu[csf] = anatomy.csf_hu

    mask = np.zeros(u.shape, dtype=bool)
    if lesion is not None and lesion.first <= index < lesion.first + lesion.length:
        blob, lesion_hu = _lesion_blob(lesion, u, v, brain_a, brain_b, index)
        mask = blob & brain & ~csf & (brain_radius < 0.95)
        hu[mask] = lesion_hu[mask]

    hu += noise_rng.standard_normal(u.shape, dtype=np.float32) * np.float32(anatomy.noise_sigma)
    kind = lesion.kind if lesion is not None and mask.any() else None
    return PhantomSlice(hu=hu.astype(np.float32), lesion_mask=mask, lesion_kind=kind)


def _bone_hu(outer_radius: np.ndarray, mean_axis: float, thickness: float) -> np.ndarray:
    """Dense outer and inner tables around a lighter diploe, 850-1350 HU before noise."""
    across = np.clip((1.0 - outer_radius) * mean_axis / thickness, 0.0, 1.0)
    return BONE_DIPLOE_HU + (BONE_TABLE_HU - BONE_DIPLOE_HU) * (2.0 * across - 1.0) ** 2


def _parenchyma_hu(
    anatomy: _Anatomy, un: np.ndarray, vn: np.ndarray, brain_radius: np.ndarray, index: int
) -> np.ndarray:
    """White matter inside, a grey cortical ribbon with a wavy border outside, a mild texture."""
    angle = np.arctan2(vn, un)
    border = (
        0.80
        + 0.025 * np.sin(7.0 * angle + anatomy.gyri[0])
        + 0.015 * np.sin(12.0 * angle + anatomy.gyri[1])
    )
    greyness = 1.0 / (1.0 + np.exp(-(brain_radius - border) / 0.025))
    tissue = anatomy.white_hu + (anatomy.grey_hu - anatomy.white_hu) * greyness
    for fx, fy, phase, drift, amplitude in anatomy.texture:
        tissue += amplitude * np.sin(math.pi * (fx * un + fy * vn) + phase + drift * index)
    return tissue


def _csf_mask(
    anatomy: _Anatomy,
    un: np.ndarray,
    vn: np.ndarray,
    brain_radius: np.ndarray,
    brain_a: float,
    depth: float,
) -> np.ndarray:
    """Subarachnoid rim under the skull, the interhemispheric fissure and the lateral ventricles."""
    csf = brain_radius > 0.975
    csf |= (np.abs(un) < 0.8 / brain_a) & (np.abs(vn) > 0.45)
    growth = max(0.0, 1.0 - (depth / 0.7) ** 2)  # ventricles appear and grow mid-stack
    centre_u, centre_v, half_u, half_v, tilt = _ventricle_shape(anatomy.ventricle_scale)
    half_u, half_v = half_u * growth, half_v * growth
    if half_u * brain_a < 0.7:
        return csf
    for side in (-1.0, 1.0):
        du, dv = un - side * centre_u, vn - centre_v
        cos, sin = math.cos(side * tilt), math.sin(side * tilt)
        along_u = cos * du + sin * dv
        along_v = -sin * du + cos * dv
        csf |= (along_u / half_u) ** 2 + (along_v / half_v) ** 2 <= 1.0
    return csf


def _lesion_blob(
    lesion: _Lesion, u: np.ndarray, v: np.ndarray, brain_a: float, brain_b: float, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """The lesion's irregular outline on this slice and its HU, denser or lighter at the centre."""
    step = index - lesion.first
    profile = 0.5 + 0.5 * math.sin(math.pi * (step + 0.5) / lesion.length)  # grows then shrinks
    radius = max(LESION_MIN_RADIUS_PX, lesion.peak_radius_px * profile)
    centre_u = (lesion.centre[0] + lesion.drift[0] * step) * brain_a
    centre_v = (lesion.centre[1] + lesion.drift[1] * step) * brain_b
    du, dv = u - centre_u, v - centre_v
    distance = np.sqrt(du**2 + dv**2)
    angle = np.arctan2(dv, du)
    outline = np.ones_like(distance)
    for order, amplitude, phase, twist in lesion.harmonics:
        outline += amplitude * np.cos(order * angle + phase + twist * step)
    outline *= radius
    blob = distance <= outline
    relative = distance / np.maximum(outline, 1e-6)
    lesion_hu = lesion.core_hu + lesion.gradient_hu * (0.5 - relative)
    return blob, lesion_hu


def _uid(*parts: object) -> str:
    """A DICOM UID under UID_ROOT, derived from `parts` by hashing: stable, unique, <= 64 chars."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    # 12 bytes give at most 29 digits and no leading zero: 28 + 29 chars stay under the 64 allowed.
    return UID_ROOT + str(int.from_bytes(digest[:12], "big"))


def _ds(value: float) -> DS:
    """A decimal string that fits DICOM's 16 characters."""
    return DS(float(value), auto_format=True)


def _prepare_class_folders(root: Path) -> None:
    for name in CLASS_NAMES:
        folder = root / name
        if folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder} already holds files; write the phantom data set into a new or empty "
                "folder so that no slice of an earlier run mixes in"
            )
        folder.mkdir(parents=True, exist_ok=True)


def _write_slice(
    path: Path, phantom: PhantomSlice, kind: str, number: int, k: int, seed: int
) -> None:
    if kind == "png":
        Image.fromarray(window_to_uint8(phantom.hu, *BRAIN_WINDOW)).save(path, format="PNG")
    else:
        write_ct_dicom(
            path,
            phantom.hu,
            patient_id=str(number),
            instance_number=k,
            slice_position_mm=(k - 1) * SLICE_THICKNESS_MM,
            seed=seed,
        )


def _lesion_record(stem: str, number: int, k: int, phantom: PhantomSlice) -> dict:
    rows, columns = np.nonzero(phantom.lesion_mask)
    return {
        "stem": stem,
        "patient": number,
        "slice": k,
        "kind": phantom.lesion_kind,
        "bbox": [
            int(columns.min()),
            int(rows.min()),
            int(columns.max()) + 1,
            int(rows.max()) + 1,
        ],
    }


def _write_origin_json(root: Path) -> None:
    document = {
        "origin": SYNTHETIC_ORIGIN,
        "real_ct": False,
        "generator": "ctstroke ml.data.synth",
        "description": "Synthetic head-CT phantoms drawn by a program: not patients, not real CT.",
    }
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    (root / ORIGIN_FILE).write_text(text, encoding="utf-8")


def _write_lesions_json(
    root: Path, lesions: list[dict], suffix: str, seed: int, size: int, slices_per_patient: int
) -> None:
    entries = [
        {"path": f"{item['stem']}{suffix}", **{k: v for k, v in item.items() if k != "stem"}}
        for item in lesions
    ]
    document = {
        "bbox_format": "x0, y0, x1, y1 in pixels; x is the column; x0, y0 inclusive, "
        "x1, y1 exclusive (as in array slicing)",
        "seed": seed,
        "size": size,
        "slices_per_patient": slices_per_patient,
        "lesions": entries,
    }
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    (root / "lesions.json").write_text(text, encoding="utf-8")
