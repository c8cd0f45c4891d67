"""The MNI152 2009 template that nilearn ships, turned into tissue maps for head CT phantoms.

nilearn's T1 template is skull-stripped, so the intracranial space, skull and scalp are
derived from the brain mask: a signed distance to the inner table lets every study pick
its own skull and scalp thickness without recomputing distance transforms.

Building the maps takes a few seconds; the result is kept in memory and in an `.npz`
cache (``$DICOMNODE_CACHE`` or ``~/.cache/dicomnode``) so later processes load it at once.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

CACHE_VERSION = 3
# Voxels added below the template: its field of view cuts through the brainstem, and the
# skull base needs room to close underneath it.
_PAD_BELOW = 24
_PAD_ABOVE = 4


@dataclass(frozen=True)
class Anatomy:
    """Tissue maps on a 1 mm RAS grid (axes x=right, y=anterior, z=superior)."""

    gm: np.ndarray  # float32 grey-matter fraction
    wm: np.ndarray  # float32 white-matter fraction
    sd: np.ndarray  # float32 signed distance (mm) to the inner table, > 0 outside
    origin: np.ndarray  # RAS mm of voxel (0, 0, 0)
    parenchyma_points: np.ndarray  # (n, 3) int32 voxels well inside the cerebral parenchyma
    surface_points: np.ndarray  # (n, 3) int32 voxels just inside the convexity's inner table

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.gm.shape
        return (s[0], s[1], s[2])

    @property
    def center(self) -> np.ndarray:
        """RAS mm of the middle of the intracranial space."""
        inside = np.argwhere(self.sd[::4, ::4, ::4] < 0) * 4
        centre: np.ndarray = self.origin + (inside.min(axis=0) + inside.max(axis=0)) / 2.0
        return centre

    def to_voxel(self, ras: np.ndarray) -> np.ndarray:
        """RAS mm (..., 3) -> fractional voxel indices (..., 3)."""
        voxel: np.ndarray = np.asarray(ras, dtype=np.float64) - self.origin
        return voxel


def cache_dir() -> Path:
    env = os.environ.get("DICOMNODE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dicomnode"


@functools.lru_cache(maxsize=1)
def load_anatomy() -> Anatomy:
    """The template anatomy, from the cache when present, else built (and cached)."""
    path = cache_dir() / f"phantom-anatomy-v{CACHE_VERSION}.npz"
    try:
        with np.load(path) as data:
            return Anatomy(**{k: data[k] for k in data.files})
    except (OSError, KeyError, ValueError):
        pass
    anatomy = build_anatomy()
    _save(anatomy, path)
    return anatomy


def _save(anatomy: Anatomy, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename so concurrent processes never read a half-written cache.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            np.savez(f, **anatomy.__dict__)
            tmp = Path(f.name)
        tmp.replace(path)
    except OSError as exc:
        logger.info("phantom anatomy cache not written to %s: %s", path, exc)


def build_anatomy() -> Anatomy:
    """Load the nilearn templates (shipped with the package, no download) and derive the maps."""
    from nilearn import datasets  # slow import, only needed when the cache is cold

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm_img = datasets.load_mni152_wm_template(resolution=1)
    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    affine = np.asarray(gm_img.affine)
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0):
        raise RuntimeError("unexpected MNI152 template affine; expected a 1 mm RAS grid")
    pad = ((0, 0), (0, 0), (_PAD_BELOW, _PAD_ABOVE))
    gm = np.pad(np.asarray(gm_img.dataobj, dtype=np.float32), pad)
    wm = np.pad(np.asarray(wm_img.dataobj, dtype=np.float32), pad)
    brain = np.pad(np.asarray(mask_img.dataobj) > 0, pad)
    gm, wm = _normalise_fractions(gm, wm, brain)
    brain = _extend_brainstem(brain)
    # Intracranial space: the brain with its sulci closed plus a thin subarachnoid layer.
    icv = brain | _coarse_closing(brain)
    for k in range(icv.shape[2]):
        icv[:, :, k] = ndimage.binary_fill_holes(icv[:, :, k])
    sd = _signed_distance(icv) - 1.5
    origin = affine[:3, 3] - np.array([0.0, 0.0, _PAD_BELOW])
    return Anatomy(
        gm=gm,
        wm=wm,
        sd=sd.astype(np.float32),
        origin=origin.astype(np.float64),
        parenchyma_points=_parenchyma_points(gm, wm, sd, origin),
        surface_points=_surface_points(sd, origin),
    )


def _normalise_fractions(gm: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gm = np.where(brain, np.clip(gm, 0.0, 1.0), 0.0).astype(np.float32)
    wm = np.where(brain, np.clip(wm, 0.0, 1.0), 0.0).astype(np.float32)
    total = gm + wm
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    return gm * scale, wm * scale


def _extend_brainstem(brain: np.ndarray) -> np.ndarray:
    """Continue the cut brainstem down through the padding, tapering, so the skull base closes under it."""
    first = _PAD_BELOW
    section = brain[:, :, first]
    out = brain.copy()
    for k in range(first - 1, 4, -1):
        section = ndimage.binary_erosion(section, iterations=1) if (first - k) % 3 == 0 else section
        out[:, :, k] = section
    return out


def _coarse_closing(mask: np.ndarray) -> np.ndarray:
    """Close sulci and the cisterns around the brainstem (6 mm ball, computed at 2 mm)."""
    coarse = ndimage.zoom(mask.astype(np.float32), 0.5, order=1) > 0.5
    coarse = np.pad(coarse, 4)
    closed = ndimage.binary_fill_holes(ndimage.binary_closing(coarse, structure=_ball(3)))[4:-4, 4:-4, 4:-4]
    factors = [n / c for n, c in zip(mask.shape, closed.shape, strict=True)]
    fine: np.ndarray = ndimage.zoom(closed.astype(np.float32), factors, order=1) > 0.5
    return fine


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    x, y, z = np.meshgrid(r, r, r, indexing="ij")
    ball: np.ndarray = x * x + y * y + z * z <= radius * radius
    return ball


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance in mm (> 0 outside the mask), computed at 2 mm and interpolated to save time."""
    coarse = ndimage.zoom(mask.astype(np.float32), 0.5, order=1) > 0.5
    inside = ndimage.distance_transform_edt(coarse, sampling=2.0)
    outside = ndimage.distance_transform_edt(~coarse, sampling=2.0)
    coarse_sd = (outside - inside).astype(np.float32)
    factors = [n / c for n, c in zip(mask.shape, coarse_sd.shape, strict=True)]
    fine: np.ndarray = ndimage.zoom(coarse_sd, factors, order=1)
    return fine


def _parenchyma_points(gm: np.ndarray, wm: np.ndarray, sd: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Voxels of cerebral parenchyma (above the tentorium, off the midline): seeds for lesions."""
    z_ras = origin[2] + np.arange(gm.shape[2])
    x_ras = origin[0] + np.arange(gm.shape[0])
    ok = (gm + wm > 0.8) & (sd < -6.0)
    ok &= (z_ras > -20.0)[None, None, :]
    ok &= (np.abs(x_ras) > 8.0)[:, None, None]
    pts = np.argwhere(ok[::2, ::2, ::2]) * 2
    return pts.astype(np.int32)


def _surface_points(sd: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Voxels just inside the inner table over the convexity: seeds for extra-axial haematomas."""
    z_ras = origin[2] + np.arange(sd.shape[2])
    x_ras = origin[0] + np.arange(sd.shape[0])
    ok = (sd > -1.5) & (sd <= -0.5)
    ok &= (z_ras > -10.0)[None, None, :]
    ok &= (np.abs(x_ras) > 25.0)[:, None, None]
    pts = np.argwhere(ok[::2, ::2, ::2]) * 2
    return pts.astype(np.int32)
