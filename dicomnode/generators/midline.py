"""How far the septum pellucidum lies from the skull's midsagittal plane: the midline shift.

A collection or mass that pushes the brain towards the other side moves the septum between
the lateral ventricles away from the midline; radiologists measure the shift there, and 5 mm
or more is a sign to act on. Subdural blood days or weeks old can be as dense as the brain it
presses on, so the pseudo-healthy difference may hardly see it (the model card's "Subdural blood
days or weeks old"); the shift it causes is seen all the same.

1. The ideal midline is the skull's plane of mirror symmetry, fitted in 3D to the bone (which
   a lesion does not move): a plane, not a line per slice, so a head rolled towards a shoulder,
   whose axial sections are each symmetric about their own centre, is measured as well.
2. On each slice through the cerebrum, along every row deep inside the brain, the septum is
   the tissue between two runs of cerebrospinal fluid (the lateral ventricles) close together
   near that line; its offset is measured across the line.
3. The shift is the median offset over the slices where a septum at least `_MIN_SEPTUM_MM`
   long was found; None where none was (the ventricles effaced or not covered).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from dicomnode.generators.ct import BONE_HU

WARN_SHIFT_MM = 5.0  # a midline shift radiologists act on
_GRID_MM = 3.0  # the bone is compared at this pixel size
_BONE_BLUR_MM = 3.0  # the bone is blurred in-plane so that the fit sees a smooth optimum
_BONE_POINTS = 3000  # bone voxels the plane's symmetry is measured at (a fixed, seeded sample)
# Where the search starts: tan of the turn (yaw) and of the roll, to about ±30 degrees.
_ROW_SLOPES = np.linspace(-0.6, 0.6, 7)
_SLICE_SLOPES = np.linspace(-0.6, 0.6, 9)
_CSF_HU = 18.0  # between cerebrospinal fluid (0-15 HU) and white matter (25-35 HU)
_REACH_MM = 20.0  # the septum is looked for this far either side of the ideal line
_STEP_MM = 0.5
_MIN_RUN_MM = 3.0  # a ventricle's width across the row, at least
_MAX_SEPTUM_MM = 8.0  # tissue between the two ventricles, at most
_DEPTH_SHARE = (0.25, 0.75)  # rows within this share of the brain's front-to-back length
_MIN_SHARE = 0.6  # slices whose brain section is at least this share of the largest
_MOST_SLICES = 16
_SLAB_MM = 5.0  # thin slices are averaged over this thickness first
_MIN_SEPTUM_MM = 8.0  # a slice counts where the septum was found along at least this length


@dataclass(frozen=True)
class MidlineShift:
    shift_mm: float  # + towards increasing columns: the patient's left in the standard axial view
    slices: int  # slices the septum was found on


@dataclass(frozen=True)
class _Plane:
    """Columns (mm) of the midsagittal plane: x = x0 + row_slope (y - y0) + slice_slope (z - z0)."""

    x0: float
    row_slope: float
    slice_slope: float
    y0: float
    z0: float

    def column_mm(self, y_mm: np.ndarray, z_mm: float) -> np.ndarray:
        return np.asarray(self.x0 + self.row_slope * (y_mm - self.y0) + self.slice_slope * (z_mm - self.z0))


def midline_shift(hu: np.ndarray, mask: np.ndarray, pixel_spacing: tuple[float, float],
                  positions_mm: np.ndarray) -> MidlineShift | None:
    """The septum's offset from the skull's midsagittal plane in slices `hu` (slices, rows,
    columns; rows running to the back of the head) with intracranial `mask`, or None where the
    skull or the septum cannot be found."""
    positions = np.asarray(positions_mm, dtype=float)
    if hu.shape[0] < 3 or np.ptp(positions) <= 0:
        return None
    plane = _skull_plane(hu, pixel_spacing, positions)
    if plane is None:
        return None
    areas = mask.sum(axis=(1, 2))
    chosen = np.flatnonzero(areas >= _MIN_SHARE * max(int(areas.max()), 1))
    if chosen.size > _MOST_SLICES:
        chosen = chosen[np.linspace(0, chosen.size - 1, _MOST_SLICES).round().astype(int)]
    offsets = []
    for k in chosen:
        near = np.flatnonzero(np.abs(positions - positions[k]) <= _SLAB_MM / 2)
        found = _septum_offsets(hu[near].mean(axis=0), mask[k], pixel_spacing, plane, positions[k])
        if found.size * pixel_spacing[0] >= _MIN_SEPTUM_MM:
            offsets.append(float(np.median(found)))
    if not offsets:
        return None
    return MidlineShift(float(np.median(offsets)), len(offsets))


def _skull_plane(hu: np.ndarray, pixel_spacing: tuple[float, float], positions: np.ndarray) -> _Plane | None:
    """The plane about which the skull best matches its mirror image."""
    every = max(1, int(_GRID_MM // float(np.median(np.diff(positions)))))  # thin slices: a few will do
    if positions[::every].size >= 3:
        hu, positions = hu[::every], positions[::every]
    zoom = (pixel_spacing[0] / _GRID_MM, pixel_spacing[1] / _GRID_MM)
    bone = np.stack([ndimage.zoom((section > BONE_HU).astype(np.float32), zoom, order=1) for section in hu])
    # Positions may be uneven: resample the slices to even steps along the series first.
    step = float(np.median(np.diff(positions)))
    even = np.arange(positions[0], positions[-1] + step / 2, step)
    order = np.interp(even, positions, np.arange(positions.size))
    where = np.meshgrid(order, np.arange(bone.shape[1]), np.arange(bone.shape[2]), indexing="ij")
    bone = ndimage.map_coordinates(bone, where, order=1)
    field = ndimage.gaussian_filter(bone, (1.0, _BONE_BLUR_MM / _GRID_MM, _BONE_BLUR_MM / _GRID_MM))
    k, r, c = np.nonzero(bone > 0.5)
    if k.size < 100:
        return None
    pick = np.random.default_rng(0).choice(k.size, min(k.size, _BONE_POINTS), replace=False)
    z, y, x = even[k[pick]], r[pick] * _GRID_MM, c[pick] * _GRID_MM
    y0, z0, xc = float(y.mean()), float(z.mean()), float(x.mean())

    def asymmetry(p: np.ndarray) -> float:
        x0, row_slope, slice_slope = p
        normal = np.array([1.0, -row_slope, -slice_slope])
        length = float(np.linalg.norm(normal))
        normal /= length
        beyond = (x - (xc + x0) - row_slope * (y - y0) - slice_slope * (z - z0)) / length
        xm, ym, zm = x - 2 * beyond * normal[0], y - 2 * beyond * normal[1], z - 2 * beyond * normal[2]
        km = (zm - even[0]) / step
        inside = (km >= 0) & (km <= even.size - 1)
        if inside.sum() < 0.5 * x.size:  # mirrored mostly out of the series: not a candidate
            return 0.0
        mirrored = ndimage.map_coordinates(field, [km[inside], ym[inside] / _GRID_MM, xm[inside] / _GRID_MM],
                                           order=1)
        return -float(mirrored.sum()) / x.size

    # A coarse look over turns and rolls first (a roll's mirror image can be a local optimum),
    # then one search from the best.
    start = min(([0.0, row, across] for row in _ROW_SLOPES for across in _SLICE_SLOPES),
                key=lambda p: asymmetry(np.array(p)))
    best = optimize.minimize(asymmetry, start, method="Powell", options={"xtol": 1e-2, "ftol": 1e-4})
    x0, row_slope, slice_slope = (float(v) for v in best.x)
    return _Plane(xc + x0, row_slope, slice_slope, y0, z0)


def _septum_offsets(section: np.ndarray, mask: np.ndarray, pixel_spacing: tuple[float, float], plane: _Plane,
                    z_mm: float) -> np.ndarray:
    """Offsets (mm, across the ideal line) of the septum on each row of `section` where one was found."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size < 2:
        return np.zeros(0)
    front, length = rows[0], rows[-1] - rows[0]
    rows = np.arange(int(front + _DEPTH_SHARE[0] * length), int(front + _DEPTH_SHARE[1] * length))
    smooth = ndimage.gaussian_filter(section.astype(np.float32), 0.7 / pixel_spacing[0])
    across = np.arange(-_REACH_MM, _REACH_MM + _STEP_MM / 2, _STEP_MM)
    line = plane.column_mm(rows * pixel_spacing[0], z_mm)
    columns = (line[:, None] + across[None, :]) / pixel_spacing[1]
    grid_rows = np.broadcast_to(rows[:, None].astype(float), columns.shape)
    profiles = ndimage.map_coordinates(smooth, [grid_rows, columns], order=1, cval=100.0)
    inside = ndimage.map_coordinates(mask.astype(np.float32), [grid_rows, columns], order=0, cval=0.0) > 0
    fluid = (profiles < _CSF_HU) & inside
    cos = 1.0 / np.sqrt(1.0 + plane.row_slope ** 2)  # from along the row to across the line
    found = []
    for run in fluid:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], run.astype(np.int8), [0]])))
        starts, ends = edges[::2], edges[1::2]
        best: tuple[float, float] | None = None
        for i in range(starts.size - 1):
            widths = ((ends[i] - starts[i]) * _STEP_MM, (ends[i + 1] - starts[i + 1]) * _STEP_MM)
            between = (starts[i + 1] - ends[i]) * _STEP_MM
            if min(widths) < _MIN_RUN_MM or between > _MAX_SEPTUM_MM:
                continue
            if best is None or min(widths) > best[0]:
                best = (min(widths), (across[ends[i] - 1] + across[starts[i + 1]]) / 2)
        if best is not None:
            found.append(best[1] * cos)
    return np.asarray(found)
