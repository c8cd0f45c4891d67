"""Metal in a phantom head: an aneurysm coil and the streaks it casts.

Patients whose aneurysm was coiled or clipped are scanned again and again; platinum reads at the
top of the stored CT scale (3071 HU; its attenuation lies far above it). The projections through
it are starved of photons and hardened, and filtered back-projection spreads each wrong
projection along its ray: bright and dark streaks radiating from the metal across the slice.

The streaks here are that, crudely: every slice holding metal gets the back-projection of
errors of random sign along the rays through the metal's centre, one per view, each ray with a
bright core and dark flanks (the ramp filter's response to a narrow error), scaled by the amount
of metal in the slice. Real streaks also depend on the beam, the reconstruction and metal
artefact reduction; the node's check (`generators.ct.intracranial_metal`) reads the metal, not
the streaks.
"""

from __future__ import annotations

import numpy as np

from dicomnode.phantoms.contrast import Box, tube
from dicomnode.phantoms.template import Anatomy

# Platinum's attenuation lies far above the stored scale; a slice holding part of a coil still
# saturates it (3071 HU), and the kernel's blur spreads that over the neighbouring pixels.
METAL_HU = 20000.0

# Where aneurysms are coiled (RAS mm): anterior communicating artery, the middle cerebral
# arteries' bifurcations, the basilar tip, the posterior communicating arteries.
_ANEURYSM_SITES: tuple[tuple[float, float, float], ...] = (
    (0.0, 12.0, -10.0), (36.0, 4.0, -10.0), (-36.0, 4.0, -10.0), (0.0, -20.0, -18.0),
    (13.0, -6.0, -16.0), (-13.0, -6.0, -16.0),
)
COIL_RADIUS_MM = (2.5, 5.0)
# Streak strength: RMS (HU) over the slice, beyond 10 mm of the metal, where the slice holds
# STREAK_REFERENCE_MM2 of metal or more; less metal casts proportionally weaker streaks.
STREAK_RMS_HU = (8.0, 25.0)
STREAK_REFERENCE_MM2 = 20.0
_VIEWS = 180
_RAY_WIDTH_MM = 0.8


def coil(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, Box, dict[str, float]]:
    """A coil mass in an aneurysm at one of the usual sites: its fraction of each template voxel
    in a box, the box, and what was drawn."""
    site = np.array(_ANEURYSM_SITES[int(rng.integers(len(_ANEURYSM_SITES)))]) + rng.uniform(-2.0, 2.0, 3)
    radius = float(rng.uniform(*COIL_RADIUS_MM))
    box, fraction = tube(anatomy, site, site, radius)
    return fraction, box, {"metal_radius_mm": radius, "metal_site_x": float(site[0]),
                           "metal_site_y": float(site[1]), "metal_site_z": float(site[2])}


def add_metal(hu: np.ndarray, fraction: np.ndarray, box: Box) -> None:
    """Put the metal into the template-grid head `hu` (in place)."""
    hu[box] = hu[box] * (1.0 - fraction) + fraction * METAL_HU


def streaks(metal: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Streak artefacts (HU, to add) of slices whose metal fraction per pixel is `metal`
    (slices, rows, cols); zero on slices without metal."""
    out = np.zeros(metal.shape, dtype=np.float32)
    rms_hu = float(rng.uniform(*STREAK_RMS_HU))
    rows, cols = metal.shape[1:]
    y = (np.arange(rows, dtype=np.float32) * pixel_mm)[:, None]
    x = (np.arange(cols, dtype=np.float32) * pixel_mm)[None, :]
    angles = np.linspace(0.0, np.pi, _VIEWS, endpoint=False)
    for k in np.flatnonzero(metal.sum(axis=(1, 2)) > 0.05):
        amount = float(metal[k].sum())
        cy = float((metal[k].sum(axis=1) * np.arange(rows)).sum()) / amount
        cx = float((metal[k].sum(axis=0) * np.arange(cols)).sum()) / amount
        dy, dx = y - cy * pixel_mm, x - cx * pixel_mm
        errors = rng.standard_normal(_VIEWS)
        image = np.zeros((rows, cols), dtype=np.float32)
        for angle, error in zip(angles, errors, strict=True):
            s = (dx * np.cos(angle) + dy * np.sin(angle)) / _RAY_WIDTH_MM
            image += float(error) * (1.0 - s * s) * np.exp(-0.5 * s * s)
        away = np.hypot(dy, dx) > 10.0
        image *= rms_hu / max(float(np.sqrt(np.mean(image[away] ** 2))), 1e-6)
        image *= min(1.0, amount * pixel_mm * pixel_mm / STREAK_REFERENCE_MM2)
        out[k] = image
    return out
