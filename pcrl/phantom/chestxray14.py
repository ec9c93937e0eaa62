"""NIH ChestX-ray14-like radiograph phantom in the dataset's native layout.

ChestX-ray14 (Wang et al., "ChestX-ray8: Hospital-scale chest X-ray database and
benchmarks on weakly-supervised classification and localization of common thorax
diseases", CVPR 2017) ships frontal chest radiographs as 8-bit grayscale PNGs (a few RGBA)
named ``images/<8-digit patient id>_<3-digit follow-up>.png``, in the archives
``images_001.tar.gz`` .. ``images_012.tar.gz``, with ``Data_Entry_2017_v2020.csv`` (one row
per image: findings, follow-up, patient, age, gender, view, original size and pixel
spacing) and the patient-wise split lists ``train_val_list.txt`` / ``test_list.txt``.

Each radiograph here is a projection-like density map: a soft-tissue thorax, two dark lungs
with diaphragm domes, the heart and aortic knob, spine, clavicles, posterior ribs, vessel
markings and a gastric bubble, mapped to 8-bit intensity (dense is bright). Each of the 14
findings is drawn where its label says (a bright round Mass or small Nodule in a lung, a
fluid level at a lung base for Effusion, an enlarged heart for Cardiomegaly, an airless
dark rim for Pneumothorax, patchy or diffuse haze for Infiltration, Consolidation,
Pneumonia and Edema, hyperlucent lungs for Emphysema, ...). Streams follow the other
phantoms: patient ``p`` draws from ``numpy.random.default_rng([seed, 14, p, ...])`` only,
so the same seed gives byte-identical files and a patient's images do not depend on how
many patients are generated. Finding geometry is drawn per patient, so a lesion stays in
place across follow-ups, and each finding has its own stream, so an image rendered
without its findings (``chestxray14_radiograph(..., findings=())``) differs from it only
where they are drawn.

The normal chest is drawn by :mod:`pcrl.phantom.chest_anatomy`, the findings by
:mod:`pcrl.phantom.chest_findings`, and the PNG and tar bytes are encoded by
:mod:`pcrl.phantom.writers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcrl.atomic import atomic_dir
from pcrl.datasets.chestxray14 import (
    ENTRY_CSV,
    ENTRY_HEADER,
    FINDINGS,
    IMAGES_DIR,
    NO_FINDING,
    TEST_LIST,
    TRAIN_VAL_LIST,
    image_name,
)
from pcrl.phantom.chest_anatomy import _anatomy, _Anatomy, _anatomy_maps, _Frame
from pcrl.phantom.chest_findings import _DRAWERS, _in
from pcrl.phantom.drawing import _check_count
from pcrl.phantom.writers import _csv_text, _png_bytes, _write_archives
from pcrl.errors import ConfigError
from pcrl.seeding import indexed_rng

__all__ = ["Radiograph", "chestxray14_radiograph", "generate_chestxray14"]

_DATASET = "chestxray14"
_STREAM = 14  # seed stream of this dataset (LUNA16 16, MSD liver 3, MSD brain 1)
_MIN_SIZE, _MAX_SIZE = 64, 4096
_MAX_ARCHIVES = 12  # images_001.tar.gz .. images_012.tar.gz
_MAX_PATIENT = 99_999_999  # 8-digit patient ids
_MAX_FOLLOW_UPS = 1000  # 3-digit follow-up numbers
_ARCHIVE_MTIME = 1506384000  # 2017-09-26, release of the images; fixed so archives are reproducible
_RGBA_EVERY = 20  # the last image of every 20th patient is written as RGBA, like a few real files
_NOISE = 2.0  # grey levels

# Per-image prevalence: the real label counts over 112,120 images, rounded.
_PREVALENCE = {
    "Atelectasis": 0.10, "Cardiomegaly": 0.025, "Effusion": 0.12, "Infiltration": 0.18, "Mass": 0.052,
    "Nodule": 0.056, "Pneumonia": 0.013, "Pneumothorax": 0.047, "Consolidation": 0.042, "Edema": 0.02,
    "Emphysema": 0.022, "Fibrosis": 0.015, "Pleural_Thickening": 0.03, "Hernia": 0.002,
}
_CHRONIC = ("Cardiomegaly", "Emphysema", "Fibrosis", "Pleural_Thickening", "Nodule", "Mass", "Hernia")
_PERSISTENCE = 0.85  # chance that a patient's chronic finding shows on a follow-up
# (width, height, pixel spacing mm) of original NIH DICOMs before the release resized them
_ORIGINAL_GEOMETRY = (
    (2682, 2749, 0.143), (2500, 2048, 0.168), (2992, 2991, 0.143), (3056, 2544, 0.139),
    (2048, 2500, 0.168), (2021, 2021, 0.194),
)


@dataclass(frozen=True)
class _Patient:
    """What is drawn once per patient: follow-up count, split key, demographics, anatomy."""

    index: int
    images: int
    test_key: float
    gender: str
    age: int
    years_per_follow_up: float
    ap_rate: float
    chronic: tuple[str, ...]
    anatomy: _Anatomy


@dataclass(frozen=True, eq=False)
class Radiograph:
    """One generated radiograph with its CSV fields and where things are drawn.

    Attributes:
        image_index: file name, ``<patient>_<follow-up>.png``.
        patient_id: ``Patient ID`` (patient index + 1).
        follow_up: ``Follow-up #``.
        findings: positive findings, in the order of :data:`pcrl.datasets.chestxray14.FINDINGS`.
        view, age, gender, original_size, pixel_spacing: the other CSV fields.
        rgba: written as an RGBA PNG (gray in R, G and B, opaque alpha).
        pixels: (H, W) uint8, rows then columns.
        lungs, heart: (H, W) bool masks of the lung fields and the (possibly enlarged) heart.
        regions: (H, W) bool mask of each drawn finding.
    """

    image_index: str
    patient_id: int
    follow_up: int
    findings: tuple[str, ...]
    view: str
    age: int
    gender: str
    original_size: tuple[int, int]
    pixel_spacing: tuple[float, float]
    rgba: bool
    pixels: np.ndarray
    lungs: np.ndarray
    heart: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------- checks


def _check_size(size: object) -> tuple[int, int]:
    """(width, height), each an integer in [_MIN_SIZE, _MAX_SIZE], or ConfigError."""
    values = tuple(size) if isinstance(size, Sequence) and not isinstance(size, str) else ()
    ok = len(values) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not ok or not all(_MIN_SIZE <= v <= _MAX_SIZE for v in values):
        raise ConfigError(
            f"{_DATASET} phantom: 'size' must be 2 integers (width, height) in [{_MIN_SIZE}, {_MAX_SIZE}], "
            f"got {size!r}"
        )
    return int(values[0]), int(values[1])


def _check_range(images_per_patient: object) -> tuple[int, int]:
    """(fewest, most) images per patient, 1 <= fewest <= most <= 1000, or ConfigError."""
    if isinstance(images_per_patient, (int, np.integer)) and not isinstance(images_per_patient, bool):
        images_per_patient = (images_per_patient, images_per_patient)
    values = tuple(images_per_patient) if isinstance(images_per_patient, Sequence) else ()
    ok = len(values) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not ok or not 1 <= values[0] <= values[1] <= _MAX_FOLLOW_UPS:
        raise ConfigError(
            f"{_DATASET} phantom: 'images_per_patient' must be an integer or (fewest, most) with "
            f"1 <= fewest <= most <= {_MAX_FOLLOW_UPS}, got {images_per_patient!r}"
        )
    return int(values[0]), int(values[1])


def _check_fraction(value: object) -> float:
    """A fraction in [0, 1], or ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{_DATASET} phantom: 'test_fraction' must be a number in [0, 1], got {value!r}")
    return float(value)


def _rng(seed: int, patient: int, *keys: int) -> np.random.Generator:
    """Generator of one stream of one patient: (seed, dataset stream, patient, keys...)."""
    return indexed_rng(seed, _STREAM, patient, *keys)


# ------------------------------------------------------------------------- patients


def _patient(seed: int, index: int, images_per_patient: tuple[int, int]) -> _Patient:
    """Patient ``index``: its draws depend on (seed, index) only."""
    count_rng = _rng(seed, index, 0)
    test_key = float(count_rng.random())  # drawn first: independent of images_per_patient
    images = int(count_rng.integers(images_per_patient[0], images_per_patient[1] + 1))
    rng = _rng(seed, index, 1)
    gender = "M" if rng.random() < 0.56 else "F"
    age = int(rng.integers(2, 90))
    years = float(rng.uniform(0.0, 0.8))
    ap_rate = float(rng.uniform(0.1, 0.7))
    chronic = tuple(name for name in _CHRONIC if rng.random() < 0.5 * _PREVALENCE[name])
    return _Patient(index, images, test_key, gender, age, years, ap_rate, chronic, _anatomy(rng))


# ------------------------------------------------------------------------- images


def _image_fields(rng: np.random.Generator, patient: _Patient) -> tuple[str, tuple[int, int, float], tuple[str, ...]]:
    """View, original geometry and findings of one follow-up (a fixed number of draws)."""
    view = "AP" if rng.random() < patient.ap_rate else "PA"
    geometry = _ORIGINAL_GEOMETRY[int(rng.integers(len(_ORIGINAL_GEOMETRY)))]
    draws = rng.random(len(FINDINGS))
    findings = tuple(
        name for name, u in zip(FINDINGS, draws)
        if u < (_PERSISTENCE if name in patient.chronic else _PREVALENCE[name])
    )
    return view, geometry, findings


def chestxray14_radiograph(
    seed: int,
    patient: int,
    follow_up: int,
    size: Sequence[int] = (256, 256),
    *,
    images_per_patient: Sequence[int] | int = (1, 3),
    findings: Sequence[str] | None = None,
) -> Radiograph:
    """One ChestX-ray14-like radiograph (Wang et al., CVPR 2017) with its CSV fields.

    Args:
        seed: dataset seed.
        patient: patient index (Patient ID ``patient + 1``); patients are independent.
        follow_up: ``Follow-up #`` of the image.
        size: (width, height) in pixels.
        images_per_patient: the (fewest, most) follow-ups drawn per patient (decides which
            image of the patient is the RGBA one).
        findings: draw these instead of the image's own labels (``()``: the same image
            without any finding); the anatomy, noise and lesion placement are unchanged.

    Raises:
        ConfigError: an argument is invalid or a finding name is unknown.
    """
    width, height = _check_size(size)
    seed = _check_count(_DATASET, "seed", seed, 0)
    patient = _check_count(_DATASET, "patient", patient, 0)
    follow_up = _check_count(_DATASET, "follow_up", follow_up, 0)
    if patient >= _MAX_PATIENT or follow_up >= _MAX_FOLLOW_UPS:
        raise ConfigError(f"{_DATASET} phantom: patient {patient} / follow-up {follow_up} exceed 8 / 3 digits")
    person = _patient(seed, patient, _check_range(images_per_patient))
    view, (orig_w, orig_h, spacing), labels = _image_fields(_rng(seed, patient, 2, follow_up, 0), person)
    if findings is not None:
        unknown = [name for name in findings if name not in FINDINGS]
        if unknown:
            raise ConfigError(f"{_DATASET} phantom: unknown findings {unknown}; known: {', '.join(FINDINGS)}")
        labels = tuple(name for name in FINDINGS if name in findings)
    geometry_rng = _rng(seed, patient, 2, follow_up, 1)
    shift, scale = geometry_rng.uniform(-0.03, 0.03, size=2), geometry_rng.uniform(0.97, 1.03)
    gain = geometry_rng.uniform(0.93, 1.07)
    x = ((np.arange(width) + 0.5) / width * 2.0 - 1.0 - shift[0]) / scale
    y = ((np.arange(height) + 0.5) / height * 2.0 - 1.0 - shift[1]) / scale
    frame = _Frame(x[None, :], y[:, None], (height, width), person.anatomy, view)
    maps = _anatomy_maps(geometry_rng, frame)
    density, regions = maps.density, {}
    for name in labels:
        delta, region = _DRAWERS[name](_rng(seed, patient, 3, FINDINGS.index(name)), frame, maps)
        density, regions[name] = density + delta, region
    grey = 8.0 + 240.0 * (1.0 - np.exp(-1.5 * gain * np.clip(density, 0.0, None)))
    grey = grey + _NOISE * _rng(seed, patient, 2, follow_up, 2).standard_normal(grey.shape)
    return Radiograph(
        image_index=image_name(patient + 1, follow_up),
        patient_id=patient + 1,
        follow_up=follow_up,
        findings=labels,
        view=view,
        age=min(person.age + int(follow_up * person.years_per_follow_up), 95),
        gender=person.gender,
        original_size=(orig_w, orig_h),
        pixel_spacing=(spacing, spacing),
        rgba=patient % _RGBA_EVERY == 0 and follow_up == person.images - 1,
        pixels=np.clip(np.rint(grey), 0, 255).astype(np.uint8),
        lungs=_in(maps.lungs),
        heart=_in(maps.heart),
        regions=regions,
    )


def _radiograph_png(radiograph: Radiograph) -> bytes:
    """The PNG file of a radiograph: grayscale, or RGBA (gray in R, G, B; opaque alpha)."""
    if not radiograph.rgba:
        return _png_bytes(radiograph.pixels)
    alpha = np.full_like(radiograph.pixels, 255)
    return _png_bytes(np.stack([radiograph.pixels] * 3 + [alpha], axis=-1))


def _csv_row(radiograph: Radiograph) -> list[str]:
    """The row of ``Data_Entry_2017_v2020.csv`` (findings ``|``-joined alphabetically)."""
    labels = "|".join(sorted(radiograph.findings)) or NO_FINDING
    return [
        radiograph.image_index, labels, str(radiograph.follow_up), str(radiograph.patient_id),
        str(radiograph.age), radiograph.gender, radiograph.view,
        str(radiograph.original_size[0]), str(radiograph.original_size[1]),
        repr(radiograph.pixel_spacing[0]), repr(radiograph.pixel_spacing[1]),
    ]


def _test_patients(people: list[_Patient], fraction: float) -> set[int]:
    """Indices of the test patients: the ``fraction`` of patients with the smallest split
    keys, at least one per list when there are two patients or more."""
    count = round(fraction * len(people))
    if len(people) >= 2 and 0.0 < fraction < 1.0:
        count = min(max(count, 1), len(people) - 1)
    ranked = sorted(people, key=lambda p: (p.test_key, p.index))
    return {p.index for p in ranked[:count]}


def generate_chestxray14(
    root: Path,
    *,
    patients: int = 8,
    images_per_patient: Sequence[int] | int = (1, 3),
    size: Sequence[int] = (256, 256),
    seed: int = 0,
    test_fraction: float = 0.25,
    archives: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> None:
    """Write a ChestX-ray14-like dataset (Wang et al., CVPR 2017) into ``root`` (replaced
    as a whole, atomically).

    Layout: ``images/<8-digit patient>_<3-digit follow-up>.png`` (8-bit grayscale; the last
    image of every 20th patient, patient 1 included, as RGBA), ``Data_Entry_2017_v2020.csv``
    with the real header, ``train_val_list.txt`` and ``test_list.txt`` split by patient
    (about ``test_fraction`` of the patients in the test list). ``archives`` > 0 also writes
    the images as ``images_001.tar.gz`` .. (at most 12, as the real release).

    Args:
        root: output folder.
        patients: number of patients (Patient IDs 1..patients).
        images_per_patient: (fewest, most) follow-ups per patient, or one count.
        size: (width, height) of every image; the real images are (1024, 1024).
        seed: dataset seed.
        test_fraction: share of the patients in ``test_list.txt``.
        archives: number of ``images_NNN.tar.gz`` archives to write (0: none).
        shard: (k, n): write only the patients p with p mod n = k (one download shard of
            the pipeline), with their CSV rows and list lines; the split is drawn over all
            patients, so the shards together are the unsharded dataset.

    Raises:
        ConfigError: an argument is invalid.
    """
    patients = _check_count(_DATASET, "patients", patients, 1)
    if patients > _MAX_PATIENT:
        raise ConfigError(f"{_DATASET} phantom: 'patients' must be at most {_MAX_PATIENT}, got {patients}")
    counts = _check_range(images_per_patient)
    size = _check_size(size)
    seed = _check_count(_DATASET, "seed", seed, 0)
    fraction = _check_fraction(test_fraction)
    archives = _check_count(_DATASET, "archives", archives, 0)
    if archives > _MAX_ARCHIVES:
        raise ConfigError(f"{_DATASET} phantom: 'archives' must be at most {_MAX_ARCHIVES}, got {archives}")
    k, n = shard
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"{_DATASET} phantom: shard must be (k, n) with 0 <= k < n, got {shard}")
    people = [_patient(seed, p, counts) for p in range(patients)]
    test = _test_patients(people, fraction)
    people = [person for person in people if person.index % n == k]
    rows: list[list[str]] = []
    lists: dict[bool, list[str]] = {False: [], True: []}
    with atomic_dir(root) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        for person in people:
            for follow_up in range(person.images):
                radiograph = chestxray14_radiograph(seed, person.index, follow_up, size, images_per_patient=counts)
                (tmp / IMAGES_DIR / radiograph.image_index).write_bytes(_radiograph_png(radiograph))
                rows.append(_csv_row(radiograph))
                lists[person.index in test].append(radiograph.image_index)
        (tmp / ENTRY_CSV).write_text(_csv_text(ENTRY_HEADER, rows))
        for name, is_test in ((TRAIN_VAL_LIST, False), (TEST_LIST, True)):
            (tmp / name).write_text("".join(f"{image}\n" for image in lists[is_test]))
        if archives:
            _write_archives(tmp, IMAGES_DIR, [row[0] for row in rows], archives, _ARCHIVE_MTIME)
