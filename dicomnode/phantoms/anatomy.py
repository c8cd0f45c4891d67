"""Per-study tissue densities: the template's tissue maps turned into a Hounsfield-unit volume.

Every study draws its own tissue densities and skull/scalp thickness, so no two phantoms
have exactly the same contrast; the values stay inside published non-contrast head CT
ranges (grey matter 35-45 HU, white matter 25-32 HU, CSF 0-15 HU, cortical bone 1000+ HU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from dicomnode.phantoms.template import Anatomy

logger = logging.getLogger(__name__)

AIR_HU = -1000.0


@dataclass(frozen=True)
class Tissues:
    """Densities (HU) and thicknesses (mm) drawn for one study."""

    gm: float
    wm: float
    csf: float
    cortical_bone: float
    diploe: float
    scalp: float
    falx: float
    skull_mm: float
    scalp_mm: float
    calcified_pineal: bool
    calcified_plexus: bool


def random_tissues(rng: np.random.Generator) -> Tissues:
    gm = float(rng.uniform(36.0, 44.0))
    return Tissues(
        gm=gm,
        # Keep a visible grey-white difference, as on a real scan.
        wm=float(min(rng.uniform(25.0, 32.0), gm - 6.0)),
        csf=float(rng.uniform(2.0, 12.0)),
        cortical_bone=float(rng.uniform(1300.0, 1800.0)),
        diploe=float(rng.uniform(350.0, 650.0)),
        scalp=float(rng.uniform(20.0, 60.0)),
        falx=float(rng.uniform(45.0, 70.0)),
        skull_mm=float(rng.uniform(5.0, 8.0)),
        scalp_mm=float(rng.uniform(4.0, 8.0)),
        calcified_pineal=bool(rng.random() < 0.5),
        calcified_plexus=bool(rng.random() < 0.4),
    )


def intracranial_fraction(sd: np.ndarray) -> np.ndarray:
    """Partial-volume fraction of the intracranial space from the signed distance (mm)."""
    frac: np.ndarray = np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32)
    return frac


def hu_volume(anatomy: Anatomy, tissues: Tissues) -> np.ndarray:
    """The healthy head in HU on the template grid (float32)."""
    sd = anatomy.sd
    icv = intracranial_fraction(sd)
    gm, wm = anatomy.gm, anatomy.wm
    csf = np.clip(icv - gm - wm, 0.0, 1.0)
    skull = _skull_thickness(anatomy, tissues.skull_mm)
    bone = np.clip(np.minimum(sd + 0.5, skull - sd + 0.5), 0.0, 1.0)
    # Two cortical tables of ~1.5 mm with cancellous diploe between them.
    diploe = np.clip(np.minimum(sd - 1.0, skull - 1.5 - sd + 0.5), 0.0, 1.0)
    diploe = np.minimum(diploe, bone)
    scalp = np.clip(np.minimum(sd - skull + 0.5, skull + tissues.scalp_mm - sd + 0.5), 0.0, 1.0)
    air = np.clip(1.0 - icv - bone - scalp, 0.0, 1.0)
    hu = gm * tissues.gm + wm * tissues.wm + csf * tissues.csf
    hu += (bone - diploe) * tissues.cortical_bone + diploe * tissues.diploe
    hu += scalp * tissues.scalp + air * AIR_HU
    _add_falx(hu, csf, anatomy, tissues.falx)
    if tissues.calcified_pineal:
        _add_calcification(hu, anatomy, np.array([0.0, -30.0, 4.0]), 2.5, 180.0)
    if tissues.calcified_plexus:
        for side in (-1.0, 1.0):
            _add_calcification(hu, anatomy, np.array([side * 28.0, -42.0, 14.0]), 3.0, 110.0)
    out: np.ndarray = hu.astype(np.float32, copy=False)
    return out


def _skull_thickness(anatomy: Anatomy, base_mm: float) -> np.ndarray:
    """Skull thickness per voxel: thicker at the occiput and frontal bone, thin at the temporal squama."""
    nx, ny, nz = anatomy.shape
    c = anatomy.center - anatomy.origin
    dx = (np.arange(nx, dtype=np.float32) - c[0])[:, None, None]
    dy = (np.arange(ny, dtype=np.float32) - c[1])[None, :, None]
    dz = (np.arange(nz, dtype=np.float32) - c[2])[None, None, :]
    r2 = dx * dx + dy * dy + dz * dz + 1.0
    lateral = dx * dx / r2
    sagittal = dy * dy / r2
    thickness: np.ndarray = base_mm * (1.0 + 0.25 * sagittal - 0.45 * lateral)
    return thickness


def _add_falx(hu: np.ndarray, csf: np.ndarray, anatomy: Anatomy, falx_hu: float) -> None:
    """A thin dense falx cerebri in the interhemispheric fissure, a landmark for midline shift."""
    x_ras = anatomy.origin[0] + np.arange(anatomy.shape[0])
    z_ras = anatomy.origin[2] + np.arange(anatomy.shape[2])
    cols = np.flatnonzero(np.abs(x_ras) < 1.5)
    weight = np.clip(1.0 - np.abs(x_ras[cols]) / 1.0, 0.0, 1.0).astype(np.float32)
    above = (z_ras > -8.0).astype(np.float32)
    for i, w in zip(cols, weight, strict=True):
        f = np.clip(csf[i] * 2.0 - 0.6, 0.0, 1.0) * w * above[None, :] * 0.8
        hu[i] = hu[i] * (1.0 - f) + f * falx_hu


def _add_calcification(
    hu: np.ndarray, anatomy: Anatomy, ras: np.ndarray, radius: float, value: float
) -> None:
    """A small physiological calcification (healthy finding, never part of the lesion mask)."""
    c = anatomy.to_voxel(ras)
    lo = np.maximum(np.floor(c - radius - 1).astype(int), 0)
    hi = np.minimum(np.ceil(c + radius + 2).astype(int), np.array(anatomy.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    gx, gy, gz = np.ogrid[box[0], box[1], box[2]]
    r = np.sqrt((gx - c[0]) ** 2 + (gy - c[1]) ** 2 + (gz - c[2]) ** 2)
    f = np.clip(radius - r + 0.5, 0.0, 1.0) * np.clip(0.5 - anatomy.sd[box] - 2.0, 0.0, 1.0)
    hu[box] = hu[box] * (1.0 - f) + f * value
