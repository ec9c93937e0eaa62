"""The 14 findings of the ChestX-ray14 phantom, each drawn over the normal chest.

A drawer returns (density change, region where the finding is) and draws from its own
patient-level stream, so a finding sits in the same place on every follow-up (bright round
Mass or small Nodule in a lung, a fluid level for Effusion, an enlarged heart for
Cardiomegaly, an airless dark rim for Pneumothorax, patchy or diffuse haze for
Infiltration, Consolidation, Pneumonia and Edema, hyperlucent lungs for Emphysema, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pcrl.phantom.chest_anatomy import (
    _EDGE,
    _HEART,
    _blob,
    _ellipse,
    _Frame,
    _heart_semi,
    _lateral,
    _lung_center,
    _lung_point,
    _Maps,
    _segment,
    _smooth_noise,
    _soft,
)

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
