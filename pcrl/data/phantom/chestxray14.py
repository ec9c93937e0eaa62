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
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from pcrl.atomic import atomic_dir
from pcrl.data.chestxray14 import (
    ENTRY_CSV,
    ENTRY_HEADER,
    FINDINGS,
    IMAGES_DIR,
    NO_FINDING,
    TEST_LIST,
    TRAIN_VAL_LIST,
    image_name,
)
from pcrl.data.phantom.drawing import _check_count
from pcrl.data.phantom.writers import _csv_text
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
_EDGE = 0.012  # soft edge of the shapes, in normalised image units (image spans [-1, 1])
_NOISE = 2.0  # grey levels
_HEART = 0.38  # density the heart adds to the chest

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
class _Anatomy:
    """Per-patient chest geometry in normalised image units (x right, y down, both in [-1, 1])."""

    cx: float  # midline
    thorax: float  # half-width of the torso
    lung_x: float  # lung centre offset from the midline
    lung_y: float
    lung_semi: tuple[float, float]
    bases: tuple[float, float]  # lateral costophrenic level of the image-left and image-right lung
    dome: float  # height of the diaphragm domes
    heart: tuple[float, float]  # heart centre
    heart_semi: tuple[float, float]
    heart_tilt: float
    ctr_enlarged: float  # cardiothoracic ratio when the patient has Cardiomegaly
    rib_pitch: float
    rib_phase: float
    rib_curve: float
    soft: float  # soft-tissue density


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
        findings: positive findings, in the order of :data:`pcrl.data.chestxray14.FINDINGS`.
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


def _anatomy(rng: np.random.Generator) -> _Anatomy:
    """Chest geometry of one patient; the heart is sized by a normal cardiothoracic ratio."""
    cx = rng.uniform(-0.03, 0.03)
    thorax = rng.uniform(0.8, 0.88)
    lung_semi = (rng.uniform(0.25, 0.28), rng.uniform(0.64, 0.7))
    lung_x = thorax - 0.22 - lung_semi[0] + rng.uniform(0.0, 0.02)
    lung_y = rng.uniform(-0.2, -0.12)
    right_base = lung_y + 0.86 * lung_semi[1] + rng.uniform(-0.02, 0.02)  # image left: patient's right
    bases = (right_base, right_base + rng.uniform(0.02, 0.06))  # the left hemidiaphragm lies lower
    tilt = rng.uniform(0.25, 0.45)
    aspect = rng.uniform(0.72, 0.82)
    half_width = rng.uniform(0.36, 0.44) * (lung_x + lung_semi[0])  # normal heart: CTR 0.36..0.44
    a = half_width / math.sqrt(math.cos(tilt) ** 2 + (aspect * math.sin(tilt)) ** 2)
    heart = (cx + rng.uniform(0.09, 0.13), bases[1] - 0.75 * aspect * a - rng.uniform(0.14, 0.17))
    return _Anatomy(
        cx=cx, thorax=thorax, lung_x=lung_x, lung_y=lung_y, lung_semi=lung_semi, bases=bases,
        dome=rng.uniform(0.1, 0.15), heart=heart, heart_semi=(a, aspect * a), heart_tilt=tilt,
        ctr_enlarged=rng.uniform(0.56, 0.66), rib_pitch=rng.uniform(0.115, 0.13), rib_phase=rng.uniform(0.0, 0.02),
        rib_curve=rng.uniform(0.6, 0.75), soft=rng.uniform(0.76, 0.84),
    )


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


# ------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Frame:
    """Open grids of normalised coordinates of the pixel centres in the patient's frame."""

    x: np.ndarray  # (1, W)
    y: np.ndarray  # (H, 1)
    shape: tuple[int, int]  # (H, W)
    anatomy: _Anatomy
    view: str


def _soft(f: np.ndarray, width: float = _EDGE) -> np.ndarray:
    """Soft indicator of the implicit region ``f < 0`` (f a signed distance)."""
    return special.expit(-f / width)


def _ellipse(frame: _Frame, center: Sequence[float], semi: Sequence[float], tilt: float = 0.0) -> np.ndarray:
    """Approximate signed distance to an ellipse (negative inside)."""
    c, s = math.cos(tilt), math.sin(tilt)
    dx, dy = frame.x - center[0], frame.y - center[1]
    u, v = (dx * c + dy * s) / semi[0], (-dx * s + dy * c) / semi[1]
    return (np.sqrt(u**2 + v**2) - 1.0) * min(semi)


def _blob(rng: np.random.Generator, frame: _Frame, center: Sequence[float], radius: float) -> np.ndarray:
    """Signed distance to a round lesion with a lobulated border (two angular harmonics)."""
    dx, dy = frame.x - center[0], frame.y - center[1]
    angle = np.arctan2(dy, dx)
    k1, k2 = rng.uniform(0, 2 * math.pi, size=2)
    wobble = 1.0 + 0.1 * np.cos(3 * angle + k1) + 0.06 * np.cos(5 * angle + k2)
    return np.sqrt(dx**2 + dy**2) - radius * wobble


def _segment(frame: _Frame, p0: Sequence[float], p1: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the segment p0-p1 and the position along it (0 at p0, 1 at p1)."""
    ex, ey = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((frame.x - p0[0]) * ex + (frame.y - p0[1]) * ey) / (ex**2 + ey**2), 0.0, 1.0)
    return np.sqrt((frame.x - p0[0] - t * ex) ** 2 + (frame.y - p0[1] - t * ey) ** 2), t


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise of unit standard deviation; ``sigma`` in normalised units."""
    pixels = max(0.5, sigma * shape[1] / 2.0)
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), pixels, mode="reflect")
    return field_ / max(float(field_.std()), 1e-12)


def _lung_center(anatomy: _Anatomy, side: int) -> tuple[float, float]:
    """Centre of lung ``side`` (0: image left, the patient's right; 1: image right)."""
    return anatomy.cx + (2 * side - 1) * anatomy.lung_x, anatomy.lung_y


def _dome(anatomy: _Anatomy, side: int, x: np.ndarray | float) -> np.ndarray | float:
    """Diaphragm height under lung ``side`` at x: highest mid-lung, lowest at the costophrenic angle."""
    t = np.clip((x - _lung_center(anatomy, side)[0]) / anatomy.lung_semi[0], -1.0, 1.0)
    return anatomy.bases[side] - anatomy.dome * (1.0 - t**2)


def _lung_distance(anatomy: _Anatomy, side: int, x: float, y: float) -> float:
    """Signed distance (approximate) of a point to lung ``side``, for placing lesions."""
    cx, cy = _lung_center(anatomy, side)
    a, b = anatomy.lung_semi
    ellipse = (math.hypot((x - cx) / a, (y - cy) / b) - 1.0) * a
    return max(ellipse, y - float(_dome(anatomy, side, x)))


def _lung_point(rng: np.random.Generator, anatomy: _Anatomy, side: int, margin: float,
                rows: tuple[float, float] = (-0.6, 0.7)) -> tuple[float, float]:
    """A point at least ``margin`` inside lung ``side``; ``rows`` bounds its height in lung semi-axes."""
    cx, cy = _lung_center(anatomy, side)
    a, b = anatomy.lung_semi
    for _ in range(200):
        x, y = cx + a * rng.uniform(-0.7, 0.7), cy + b * rng.uniform(*rows)
        if _lung_distance(anatomy, side, x, y) < -margin:
            return x, y
    return cx, cy


def _lateral(anatomy: _Anatomy, side: int) -> int:
    """Direction (-1 or +1 in x) from lung ``side`` towards the chest wall."""
    return 2 * side - 1


# ------------------------------------------------------------------------- anatomy


@dataclass
class _Maps:
    """Density maps of the anatomy; findings add to ``density`` and may read the others."""

    body: np.ndarray
    lung: tuple[np.ndarray, np.ndarray]
    heart: np.ndarray
    markings: np.ndarray
    density: np.ndarray

    @property
    def lungs(self) -> np.ndarray:
        """Both lung fields (soft)."""
        return np.clip(self.lung[0] + self.lung[1], 0.0, 1.0)


def _heart_semi(anatomy: _Anatomy, view: str) -> tuple[float, float]:
    """Heart semi-axes; an AP film magnifies the heart (about 8%)."""
    scale = 1.08 if view == "AP" else 1.0
    return anatomy.heart_semi[0] * scale, anatomy.heart_semi[1] * scale


def _lung_mask(frame: _Frame, side: int) -> np.ndarray:
    """Soft lung field ``side``: an ellipse cut by the diaphragm dome."""
    anatomy = frame.anatomy
    ellipse = _soft(_ellipse(frame, _lung_center(anatomy, side), anatomy.lung_semi))
    return ellipse * _soft(frame.y - _dome(anatomy, side, frame.x))


def _ribs(frame: _Frame) -> np.ndarray:
    """Posterior rib shadows: arcs from the spine curving down laterally, plus clavicles."""
    anatomy = frame.anatomy
    u = np.abs(frame.x - anatomy.cx)
    wall = anatomy.lung_x + anatomy.lung_semi[0] + 0.05
    cage = _soft(u - wall, 0.02) * _soft(0.05 - u, 0.02) * _soft(frame.y - max(anatomy.bases) + 0.05, 0.03)
    top = anatomy.lung_y - anatomy.lung_semi[1] - 0.02
    phase = (frame.y - anatomy.rib_curve * u**2 - top - anatomy.rib_phase) / anatomy.rib_pitch
    index = np.round(phase)
    offset = (phase - index) * anatomy.rib_pitch
    band = np.exp(-((offset / 0.022) ** 2)) * ((index >= 0) & (index <= 9))
    front = (frame.y - top - 0.45 * (wall - u)) / (1.1 * anatomy.rib_pitch)  # anterior ribs, descending medially
    front_band = np.exp(-(((front - np.round(front)) * anatomy.rib_pitch / 0.03) ** 2))
    front_band = front_band * ((front > 0.5) & (front < 6.5))
    ribs = (0.12 * band + 0.04 * front_band) * cage
    for sign in (-1.0, 1.0):
        start = (anatomy.cx + sign * 0.06, top + 0.08)
        end = (anatomy.cx + sign * (wall - 0.1), top - 0.02)
        distance, _ = _segment(frame, start, end)
        ribs = ribs + 0.2 * _soft(distance - 0.022, 0.008)
    return ribs


def _vessels(rng: np.random.Generator, frame: _Frame) -> np.ndarray:
    """Lung markings: vessels branching out of each hilum, plus a fine texture."""
    anatomy = frame.anatomy
    markings = np.zeros(frame.shape)
    for side in (0, 1):
        lateral = _lateral(anatomy, side)
        hilum = (anatomy.cx + lateral * 0.14, anatomy.lung_y + 0.12 + rng.uniform(-0.03, 0.03))
        for _ in range(8):
            angle = rng.uniform(-1.3, 1.3)
            length = rng.uniform(0.22, 0.42)
            end = (hilum[0] + lateral * length * math.cos(angle), hilum[1] + length * math.sin(angle))
            distance, t = _segment(frame, hilum, end)
            width = 0.009 * (1.0 - 0.6 * t)
            markings = np.maximum(markings, 0.09 * (1.0 - 0.5 * t) * np.exp(-((distance / width) ** 2)))
    texture = np.clip(_smooth_noise(rng, frame.shape, 0.012), 0.0, None)
    return markings + 0.03 * texture


def _anatomy_maps(rng: np.random.Generator, frame: _Frame) -> _Maps:
    """Density of the normal chest (dense is bright once mapped to grey levels)."""
    anatomy = frame.anatomy
    u = (frame.x - anatomy.cx) / anatomy.thorax
    torso_f = (np.abs(u) ** 4 + ((frame.y - 0.3) / 1.35) ** 4) ** 0.25 - 1.0
    neck = _soft(np.abs(frame.x - anatomy.cx) - 0.17, 0.02) * _soft(frame.y + 0.7, 0.05)
    body = np.maximum(_soft(torso_f * anatomy.thorax, 0.015), neck)
    thickness = 0.6 + 0.4 * np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
    density = anatomy.soft * body * thickness
    spine = _soft(np.abs(frame.x - anatomy.cx) - 0.055, 0.01)
    density = density + 0.14 * spine * (0.75 + 0.25 * np.cos(np.pi * frame.y / 0.09) ** 2)
    heart = _soft(_ellipse(frame, anatomy.heart, _heart_semi(anatomy, frame.view), anatomy.heart_tilt))
    lung = (_lung_mask(frame, 0), _lung_mask(frame, 1))
    lungs = np.clip(lung[0] + lung[1], 0.0, 1.0)
    markings = _vessels(rng, frame) * lungs
    density = density - 0.52 * lungs * (1.0 - 0.7 * heart) + markings + _ribs(frame)
    knob = (anatomy.cx + 0.1, anatomy.lung_y - 0.2)
    density = density + _HEART * heart + 0.22 * _soft(_ellipse(frame, knob, (0.06, 0.055)))
    bubble = (anatomy.cx + anatomy.lung_x, anatomy.bases[1] + 0.1)
    density = density - 0.22 * _soft(_ellipse(frame, bubble, (0.08, 0.045)))
    return _Maps(body, lung, heart, markings, density)


# ------------------------------------------------------------------------- findings

# A drawer returns (density change, region where the finding is); it draws from its own
# patient-level stream, so a finding sits in the same place on every follow-up.
_Drawer = Callable[[np.random.Generator, _Frame, _Maps], tuple[np.ndarray, np.ndarray]]


def _in(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of a soft map."""
    return mask > 0.5


def _draw_mass(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """A bright lobulated round opacity of 5.5-9.5% of the image width in one lung."""
    side, radius = int(rng.integers(2)), rng.uniform(0.055, 0.095)
    center = _lung_point(rng, frame.anatomy, side, 1.15 * radius + 0.02)
    blob = _soft(_blob(rng, frame, center, radius))
    return 0.42 * blob, _in(blob)


def _draw_nodule(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """A small sharp round opacity (1.8-3.2% of the image width) in one lung."""
    side, radius = int(rng.integers(2)), rng.uniform(0.018, 0.032)
    center = _lung_point(rng, frame.anatomy, side, radius + 0.03)
    blob = _soft(_blob(rng, frame, center, radius), 0.5 * _EDGE)
    return 0.4 * blob, _in(blob)


def _draw_effusion(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """Fluid filling a lung base up to a meniscus that rises towards the chest wall."""
    anatomy, side = frame.anatomy, int(rng.integers(2))
    level = anatomy.bases[side] - anatomy.dome - rng.uniform(0.1, 0.22)
    cx = _lung_center(anatomy, side)[0]
    lateral = np.clip(_lateral(anatomy, side) * (frame.x - cx) / anatomy.lung_semi[0], -1.0, 1.0)
    surface = level - 0.08 * (lateral + 1.0) / 2.0
    fluid = maps.lung[side] * _soft(surface - frame.y, 0.02)
    return 0.5 * fluid, _in(fluid)


def _draw_cardiomegaly(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """The heart enlarged to the patient's cardiothoracic ratio with Cardiomegaly (0.56-0.66)."""
    anatomy = frame.anatomy
    a, b = _heart_semi(anatomy, frame.view)
    tilt = anatomy.heart_tilt
    half_width = math.hypot(a * math.cos(tilt), b * math.sin(tilt))
    scale = anatomy.ctr_enlarged * (anatomy.lung_x + anatomy.lung_semi[0]) / half_width
    scale = max(scale, 1.15) * rng.uniform(1.0, 1.02)
    center = (anatomy.heart[0] + 0.25 * (scale - 1.0) * a, anatomy.heart[1] + 0.2 * (scale - 1.0) * b)
    big = _soft(_ellipse(frame, center, (a * scale, b * scale), tilt))
    normal = maps.heart
    maps.heart = np.maximum(normal, big)
    return _HEART * np.clip(big - normal, 0.0, None), _in(big) & ~_in(normal)


def _collapsed(frame: _Frame, side: int, factor: float) -> np.ndarray:
    """Signed distance to lung ``side`` shrunk by ``factor`` towards its hilum (medial, low)."""
    anatomy = frame.anatomy
    cx, cy = _lung_center(anatomy, side)
    a, b = anatomy.lung_semi
    anchor = (cx - _lateral(anatomy, side) * 0.7 * a, cy + 0.3 * b)
    center = (anchor[0] + factor * (cx - anchor[0]), anchor[1] + factor * (cy - anchor[1]))
    return _ellipse(frame, center, (a * factor, b * factor))


def _draw_pneumothorax(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """Air between chest wall and a collapsed lung: a dark rim without markings, and the
    visceral pleural line at the lung's edge."""
    side, factor = int(rng.integers(2)), rng.uniform(0.74, 0.86)
    edge = _collapsed(frame, side, factor)
    rim = maps.lung[side] * (1.0 - _soft(edge))
    line = 0.1 * maps.lung[side] * np.exp(-(((edge + 0.012) / 0.004) ** 2))
    return -0.24 * rim - maps.markings * rim + line, _in(rim)


def _draw_infiltration(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """Patchy ill-defined haze over a zone of one lung."""
    side = int(rng.integers(2))
    center = _lung_point(rng, frame.anatomy, side, 0.1, rows=(-0.3, 0.5))
    zone = _soft(_ellipse(frame, center, (0.2, 0.26)), 0.04) * maps.lung[side]
    patches = np.clip(_smooth_noise(rng, frame.shape, 0.03) + 0.6, 0.0, 2.0)
    return 0.18 * zone * patches, _in(zone)


def _draw_consolidation(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """A dense homogeneous lobulated opacity of a lobe, hiding the vessels."""
    side, radius = int(rng.integers(2)), rng.uniform(0.12, 0.17)
    center = _lung_point(rng, frame.anatomy, side, 0.5 * radius, rows=(-0.2, 0.5))
    blob = _soft(_blob(rng, frame, center, radius), 2 * _EDGE) * maps.lung[side]
    return 0.45 * blob - 0.5 * maps.markings * blob, _in(blob)


def _draw_pneumonia(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """Two to four confluent patchy opacities in the lower half of one lung."""
    side = int(rng.integers(2))
    patch = np.zeros(frame.shape)
    for _ in range(int(rng.integers(2, 5))):
        radius = rng.uniform(0.05, 0.09)
        center = _lung_point(rng, frame.anatomy, side, 0.5 * radius, rows=(0.0, 0.65))
        patch = np.maximum(patch, _soft(_blob(rng, frame, center, radius), 2.5 * _EDGE))
    patch = patch * maps.lung[side]
    return 0.32 * patch, _in(patch)


def _draw_edema(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """Bilateral perihilar ("bat-wing") haze fading towards the periphery."""
    anatomy = frame.anatomy
    sigma = rng.uniform(0.17, 0.22)
    haze = np.zeros(frame.shape)
    for side in (0, 1):
        hilum = (anatomy.cx + _lateral(anatomy, side) * 0.2, anatomy.lung_y + 0.15)
        distance2 = (frame.x - hilum[0]) ** 2 + (frame.y - hilum[1]) ** 2
        haze = haze + maps.lung[side] * np.exp(-distance2 / (2 * sigma**2))
    return 0.3 * haze, _in(maps.lungs) & (haze > 0.35)


def _draw_atelectasis(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """A plate-like (discoid) band opacity in the lower zone of one lung."""
    anatomy, side = frame.anatomy, int(rng.integers(2))
    cx, _ = _lung_center(anatomy, side)
    start = _lung_point(rng, anatomy, side, 0.05, rows=(0.2, 0.55))
    length = rng.uniform(0.16, 0.26)
    direction = 1.0 if start[0] < cx else -1.0
    end = (start[0] + direction * length, start[1] + rng.uniform(-0.05, 0.05))
    distance, _ = _segment(frame, start, end)
    band = _soft(distance - rng.uniform(0.018, 0.028), 0.6 * _EDGE) * maps.lung[side]
    return 0.42 * band, _in(band)


def _draw_emphysema(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """Hyperlucent lungs with sparse markings."""
    lungs = maps.lungs
    return -rng.uniform(0.1, 0.14) * lungs - 0.7 * maps.markings, _in(lungs)


def _draw_fibrosis(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """A coarse reticular net over the lower zones of both lungs."""
    anatomy = frame.anatomy
    pitch = rng.uniform(0.04, 0.055)
    warp = [1.5 * _smooth_noise(rng, frame.shape, 0.05) for _ in range(2)]
    lines_x = np.sin(2 * np.pi * frame.x / pitch + warp[0])
    lines_y = np.sin(2 * np.pi * frame.y / pitch + warp[1])
    net = np.maximum(np.exp(-((lines_x / 0.35) ** 2)), np.exp(-((lines_y / 0.35) ** 2)))
    zone = maps.lungs * _soft(anatomy.lung_y + 0.05 - frame.y, 0.05)
    return (0.05 + 0.15 * net) * zone, _in(zone)


def _draw_pleural_thickening(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """A dense band along the chest wall and apex of one lung."""
    side = int(rng.integers(2))
    factor = 1.0 - rng.uniform(0.035, 0.05) / frame.anatomy.lung_semi[0]
    band = maps.lung[side] * (1.0 - _soft(_collapsed(frame, side, factor)))
    return 0.35 * band, _in(band)


def _draw_hernia(rng: np.random.Generator, frame: _Frame, maps: _Maps) -> tuple[np.ndarray, np.ndarray]:
    """A hiatal hernia: a round retrocardiac opacity with a small air cap above a fluid level."""
    anatomy = frame.anatomy
    radius = rng.uniform(0.07, 0.1)
    center = (anatomy.cx + rng.uniform(0.0, 0.06), anatomy.heart[1] + 0.3 * anatomy.heart_semi[1])
    disk = _soft(_blob(rng, frame, center, radius))
    fluid = _soft(center[1] - 0.45 * radius - frame.y, 0.005)
    return disk * (0.55 * fluid - 0.15 * (1.0 - fluid)), _in(disk)


_DRAWERS: dict[str, _Drawer] = {
    "Atelectasis": _draw_atelectasis,
    "Cardiomegaly": _draw_cardiomegaly,
    "Effusion": _draw_effusion,
    "Infiltration": _draw_infiltration,
    "Mass": _draw_mass,
    "Nodule": _draw_nodule,
    "Pneumonia": _draw_pneumonia,
    "Pneumothorax": _draw_pneumothorax,
    "Consolidation": _draw_consolidation,
    "Edema": _draw_edema,
    "Emphysema": _draw_emphysema,
    "Fibrosis": _draw_fibrosis,
    "Pleural_Thickening": _draw_pleural_thickening,
    "Hernia": _draw_hernia,
}


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


# --------------------------------------------------------------------------- writing


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC of type and data."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bytes(pixels: np.ndarray) -> bytes:
    """PNG (ISO/IEC 15948) of (H, W) uint8 grayscale or (H, W, 4) uint8 RGBA, no metadata.

    Every row uses the 'Up' filter (difference to the row above), which compresses smooth
    radiographs well; the bytes depend on the pixels and zlib only.
    """
    color = 0 if pixels.ndim == 2 else 6
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(pixels.shape[0], -1)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG filters do
    raw = np.hstack([np.full((rows.shape[0], 1), 2, dtype=np.uint8), filtered]).tobytes()
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))


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


def _write_archives(tmp: Path, names: list[str], archives: int) -> None:
    """``images_001.tar.gz``.. : the images in file-name order, in contiguous groups, each
    extracting to ``images/<name>.png``; fixed times and owners, so the bytes are reproducible."""
    for number, group in enumerate(np.array_split(np.array(names, dtype=object), archives), start=1):
        path = tmp / f"images_{number:03d}.tar.gz"
        with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            folder = tarfile.TarInfo(IMAGES_DIR)
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, _ARCHIVE_MTIME
            tar.addfile(folder)
            for name in group:
                data = (tmp / IMAGES_DIR / name).read_bytes()
                info = tarfile.TarInfo(f"{IMAGES_DIR}/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, _ARCHIVE_MTIME
                tar.addfile(info, io.BytesIO(data))


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
            _write_archives(tmp, [row[0] for row in rows], archives)
