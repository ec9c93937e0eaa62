"""The normal chest of the ChestX-ray14 phantom: per-patient geometry and density maps.

Coordinates are normalised image units (x right, y down, the image spans [-1, 1]); shapes
are soft implicit regions (a signed distance through a logistic edge). :func:`_anatomy`
draws a patient's chest once; :func:`_anatomy_maps` renders it on one image's
:class:`_Frame` (soft tissue, lungs with diaphragm domes, heart and aortic knob, spine,
ribs and clavicles, vessel markings, gastric bubble). The findings drawn over it are in
:mod:`pcrl.phantom.chest_findings`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

_EDGE = 0.012  # soft edge of the shapes, in normalised image units (image spans [-1, 1])
_HEART = 0.38  # density the heart adds to the chest


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
