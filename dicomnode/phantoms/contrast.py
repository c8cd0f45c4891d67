"""Iodinated contrast in a phantom head: enhanced arteries, cortical vessels, dural sinuses.

The node's model reads non-contrast head CT only. A contrast-enhanced series whose headers do
not say so (ContrastBolusAgent left out) must still be recognised; these phantoms are what
that check is tested against. Vessel blood reads 150-200 HU in a routine post-contrast scan
(venous phase) and 250-450 HU in a CT angiogram; the parenchyma gains a few HU.

The vessels are coarse on purpose (the template is 1 mm): the circle of Willis and its main
branches as tubes along fixed paths, cortical vessels as a random tube network in the sulci
(where two smooth random fields are both near zero), and the superior sagittal and transverse
sinuses along the inner table.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

from dicomnode.phantoms.anatomy import intracranial_fraction
from dicomnode.phantoms.template import Anatomy

VESSEL_HU_RANGE = (100.0, 600.0)

# Main arteries (RAS mm, right side; mirrored to the left) as polylines with a radius (mm).
_ARTERIES: tuple[tuple[tuple[tuple[float, float, float], ...], float], ...] = (
    (((16.0, 4.0, -38.0), (15.0, 2.0, -26.0), (14.0, 0.0, -16.0)), 2.0),  # internal carotid
    (((14.0, 0.0, -16.0), (26.0, 2.0, -14.0), (36.0, 4.0, -10.0)), 1.5),  # M1
    (((36.0, 4.0, -10.0), (41.0, -8.0, 6.0), (46.0, -26.0, 24.0)), 1.0),  # M2, insula
    (((36.0, 4.0, -10.0), (42.0, 14.0, 8.0), (44.0, 20.0, 28.0)), 1.0),  # M2, frontal
    (((14.0, 0.0, -16.0), (4.0, 12.0, -10.0)), 1.0),  # A1
    (((2.5, 12.0, -10.0), (2.5, 30.0, 8.0), (2.5, 24.0, 36.0), (2.5, -10.0, 52.0)), 1.0),  # A2
    (((0.0, -26.0, -44.0), (0.0, -20.0, -20.0)), 1.5),  # basilar (drawn on both sides alike)
    (((0.0, -20.0, -20.0), (14.0, -24.0, -14.0), (28.0, -52.0, -6.0), (16.0, -84.0, 4.0)), 1.0),  # P1-P3
    (((14.0, 0.0, -16.0), (12.0, -14.0, -16.0)), 0.7),  # posterior communicating
)

# The fraction of sulcal CSF that cortical vessels fill.
_CORTICAL_VESSEL_SHARE = 0.06


def add_contrast(hu: np.ndarray, anatomy: Anatomy, vessel_hu: float, rng: np.random.Generator) -> None:
    """Enhance `hu` (the template-grid head, in place) as after an intravenous iodine bolus."""
    if not VESSEL_HU_RANGE[0] <= vessel_hu <= VESSEL_HU_RANGE[1]:
        low, high = VESSEL_HU_RANGE
        raise ValueError(f"contrast-enhanced vessel blood must be within {low:g}-{high:g} HU, "
                         f"got {vessel_hu:g}")
    icv = intracranial_fraction(anatomy.sd)
    vessels = np.maximum(_arteries(anatomy), _cortical_vessels(anatomy, rng))
    vessels = np.maximum(vessels, _sinuses(anatomy))
    vessels *= icv
    # Enhancing grey matter and, less, white matter (a few HU, from their blood volume).
    hu += anatomy.gm * float(rng.uniform(3.0, 6.0)) + anatomy.wm * float(rng.uniform(1.0, 3.0))
    hu *= 1.0 - vessels
    hu += vessels * vessel_hu


def _ras_grid(anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = (anatomy.origin[i] + np.arange(anatomy.shape[i], dtype=np.float32) for i in range(3))
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _arteries(anatomy: Anatomy) -> np.ndarray:
    out = np.zeros(anatomy.shape, dtype=np.float32)
    for path, radius in _ARTERIES:
        for side in (1.0, -1.0):
            points = np.array(path) * np.array([side, 1.0, 1.0])
            for a, b in itertools.pairwise(points):
                box, fraction = tube(anatomy, a, b, radius)
                np.maximum(out[box], fraction, out=out[box])
    return out


Box = tuple[slice, slice, slice]


def tube(anatomy: Anatomy, a: np.ndarray, b: np.ndarray, radius: float) -> tuple[Box, np.ndarray]:
    """Partial-volume fraction of a cylinder from a to b (RAS mm; a sphere where they meet) in
    a box of the template grid: the box and the fraction of each of its voxels."""
    va, vb = anatomy.to_voxel(a), anatomy.to_voxel(b)
    lo = np.maximum(np.floor(np.minimum(va, vb) - radius - 1).astype(int), 0)
    hi = np.minimum(np.ceil(np.maximum(va, vb) + radius + 2).astype(int), np.array(anatomy.shape))
    box = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    grid = np.stack(np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij"), axis=-1)
    axis = vb - va
    t = np.clip(((grid - va) @ axis) / max(float(axis @ axis), 1e-6), 0.0, 1.0)
    distance = np.linalg.norm(grid - (va + t[..., None] * axis), axis=-1)
    fraction = np.clip(radius - distance + 0.5, 0.0, 1.0).astype(np.float32)
    return box, fraction


def _cortical_vessels(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A random tube network in the sulcal CSF near the brain's surface."""
    csf = np.clip(intracranial_fraction(anatomy.sd) - anatomy.gm - anatomy.wm, 0.0, 1.0)
    sulcal = (csf > 0.3) & (anatomy.sd > -25.0)
    fields = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.standard_normal(anatomy.shape, dtype=np.float32), 5.0)
        fields.append(field / float(field.std()))
    closeness = np.maximum(np.abs(fields[0]), np.abs(fields[1]))
    # The threshold that fills the chosen share of the sulcal CSF: as wide as the fields allow.
    width = float(np.quantile(closeness[sulcal], _CORTICAL_VESSEL_SHARE))
    fraction: np.ndarray = (np.clip(1.5 - closeness / width, 0.0, 1.0) * csf).astype(np.float32)
    return fraction


def _sinuses(anatomy: Anatomy) -> np.ndarray:
    """Superior sagittal sinus along the midline vault, transverse sinuses along the occiput."""
    x, y, z = _ras_grid(anatomy)
    depth = -anatomy.sd  # mm inside the inner table
    near_table = (depth > -0.5) & (depth < 7.0)
    # A triangle in cross-section: 10 mm wide at the table, narrowing to nothing 7 mm in.
    half_width = 5.0 * np.clip(1.0 - depth / 7.0, 0.0, 1.0)
    sagittal = near_table & (np.abs(x) < half_width) & ((z > 10.0) | ((y < -60.0) & (z > -4.0)))
    transverse_z = -2.0 - 10.0 * np.clip(np.abs(x) / 60.0, 0.0, 1.0)
    transverse = near_table & (depth < 6.0) & (y < -55.0) & (np.abs(z - transverse_z) < 4.0)
    sinuses: np.ndarray = (sagittal | transverse).astype(np.float32)
    return sinuses
