"""How far a head lies rolled towards a shoulder or turned to a side in its axial slices.

A head is close to mirror-symmetric about its midsagittal plane, which an axial slice cuts
along a line. That line leans from the image's vertical by the head's turn (yaw), and from
slice to slice it drifts sideways by the tangent of the head's roll times the distance
between the slices. Both are read from what lies inside the skull on each slice through the
cerebrum (ventricles, fissures, grey and white matter): the line about which it best matches
its own mirror image. The outline alone would not do: the brain is round enough in front
view that every axial section of a rolled head is still symmetric about its own centre.

The pseudo-healthy model learnt heads rolled up to 5 degrees and turned up to 8; rolled
further, the axial plane cuts the skull base and the temporal lobes at different heights on
the two sides, and healthy structures read as findings (the card's evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

LEARNT_ROLL_DEG, LEARNT_YAW_DEG = 5.0, 8.0  # what training drew (phantoms.volume._random_pose)
# On phantoms the estimate errs by under 2 degrees at the 90th percentile, at most 6 (a large
# roll reads low): a head within what was learnt stays below these, one rolled or turned 20
# degrees further lies above (the card's "A head rolled or turned").
WARN_ROLL_DEG, WARN_YAW_DEG = 10.0, 14.0
_GRID_MM = 2.0  # sections are compared at this pixel size: fine enough for a degree or two
_ANGLES_DEG = np.arange(-30.0, 30.01, 1.0)
_COARSE_STEP = 3  # degrees between the angles tried first
_MIN_SHARE = 0.5  # slices whose mask holds at least this share of the largest section: the cerebrum
_MOST_SLICES = 12  # enough for the fit; a thin series is sampled evenly
_MIN_SLICES, _MIN_SPAN_MM = 4, 30.0
_SLAB_MM = 5.0  # thin slices are averaged over this thickness first: their noise hides the detail
_LOCAL_MEAN_MM = 10.0  # what varies over more than this is the section's shape, not its content
_FADE_MM = 8.0
# Densities above grey matter read as grey matter: blood, on one side, would pull the line.
_TISSUE_HU = 42.0


@dataclass(frozen=True)
class HeadTurn:
    roll_deg: float  # about the front-back axis; the sign follows the slices' column direction
    yaw_deg: float  # about the head-foot axis, in the slices' plane
    slices: int  # slices the estimate rests on


def head_turn(hu: np.ndarray, mask: np.ndarray, pixel_spacing: tuple[float, float],
              positions_mm: np.ndarray) -> HeadTurn | None:
    """The head's roll and yaw from its slices `hu` and their intracranial `mask` (slices, rows,
    columns; rows running to the back of the head), or None where too few slices cross the
    cerebrum to tell."""
    areas = mask.sum(axis=(1, 2))
    if not areas.size or areas.max() == 0:
        return None
    chosen = np.flatnonzero(areas >= _MIN_SHARE * areas.max())
    if chosen.size > _MOST_SLICES:
        chosen = chosen[np.linspace(0, chosen.size - 1, _MOST_SLICES).round().astype(int)]
    positions = np.asarray(positions_mm, dtype=float)[chosen]
    if chosen.size < _MIN_SLICES or np.ptp(positions) < _MIN_SPAN_MM:
        return None
    zoom = (pixel_spacing[0] / _GRID_MM, pixel_spacing[1] / _GRID_MM)
    all_positions = np.asarray(positions_mm, dtype=float)
    sections = []
    for k in chosen:  # each slice averaged with those within _SLAB_MM, as thin series are noisy
        near = np.flatnonzero(np.abs(all_positions - all_positions[k]) <= _SLAB_MM / 2)
        sections.append(_content(hu[near].mean(axis=0), mask[k], pixel_spacing, zoom))
    # One turn for the whole head: the angle at which the slices, together, are most symmetric;
    # searched every _COARSE_STEP degrees, then degree by degree around the best.
    coarse = _ANGLES_DEG[::_COARSE_STEP]
    best = coarse[int(np.argmax(sum(_mirror_overlaps(x, coarse).max(axis=1) for x in sections)))]
    fine = _ANGLES_DEG[np.abs(_ANGLES_DEG - best) < _COARSE_STEP]
    overlaps = np.stack([_mirror_overlaps(x, fine) for x in sections])  # slices, angles, k
    index = int(np.argmax(overlaps.max(axis=2).sum(axis=0)))
    angle = float(fine[index])
    columns_mm = np.array([_crossing(angle, int(np.argmax(overlaps[i, index])) / 2.0, sections[i].shape)
                           for i in range(len(sections))]) * _GRID_MM
    drift = stats.theilslopes(columns_mm, positions).slope  # robust to a slice or two gone astray
    return HeadTurn(float(np.degrees(np.arctan(drift))), angle, int(chosen.size))


def _content(hu: np.ndarray, mask: np.ndarray, pixel_spacing: tuple[float, float],
             zoom: tuple[float, float]) -> np.ndarray:
    """The slice's brain-windowed HU inside the mask, less its local mean, faded out towards the
    mask's edge, on the comparison grid: the shapes inside the skull (ventricles, fissures,
    sulci), not its outline."""
    # To the comparison grid first, averaging each grid pixel's area (the noise of thin slices).
    box = [max(1, round(1.0 / z)) for z in zoom]
    inside = ndimage.zoom(ndimage.uniform_filter(mask.astype(np.float32), box), zoom, order=1) > 0.5
    if not inside.any():
        return np.zeros(inside.shape, dtype=np.float32)
    tissue = ndimage.zoom(ndimage.uniform_filter(np.clip(hu, 0.0, _TISSUE_HU).astype(np.float32), box), zoom,
                          order=1) * inside

    def mean_inside(sigma_px: float) -> np.ndarray:
        weight = ndimage.gaussian_filter(inside.astype(np.float32), sigma_px)
        return np.asarray(ndimage.gaussian_filter(tissue, sigma_px) / np.maximum(weight, 1e-3))

    detail = mean_inside(0.5) - mean_inside(_LOCAL_MEAN_MM / _GRID_MM)
    depth = ndimage.distance_transform_edt(inside) * _GRID_MM
    fade = np.clip(depth / _FADE_MM - 0.5, 0.0, 1.0)  # nothing from the inner table's rim
    return np.asarray(detail * fade, dtype=np.float32)


def _turn(angle_deg: float) -> np.ndarray:
    theta = np.radians(angle_deg)
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def _mirror_overlaps(section: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(angles, 2 * width): for each of `angles`, how well `section` matches its mirror
    image about the line leaning by that angle through each half-column k / 2, as a share of
    its energy (1: perfectly symmetric)."""
    centre = (np.array(section.shape, dtype=float) - 1.0) / 2.0
    width = section.shape[1]
    energy = max(float((section * section).sum()), 1e-6)
    rows = []
    for angle in angles:
        turn = _turn(float(angle))
        # Output pixel o samples input pixel turn @ (o - centre) + centre: the section turned so
        # that a line leaning by `angle` stands upright.
        upright = ndimage.affine_transform(section, turn, offset=centre - turn @ centre, order=1)
        spectrum = np.fft.rfft(upright, n=2 * width, axis=1)
        # Summed over rows, each row convolved with itself: at index k, the product of the
        # section with its mirror image about column k / 2.
        rows.append(np.fft.irfft(spectrum * spectrum, n=2 * width, axis=1).sum(axis=0) / energy)
    return np.array(rows)


def _crossing(angle: float, column: float, shape: tuple[int, ...]) -> float:
    """Where the upright line at `column` of the section turned by `angle` crosses the section's
    middle row, in the section's own columns."""
    centre = (np.array(shape[:2], dtype=float) - 1.0) / 2.0
    turn = _turn(angle)
    point = turn @ (np.array([centre[0], column]) - centre) + centre
    along = turn @ np.array([1.0, 0.0])  # the line's direction, down the rows
    return float(point[1] + (centre[0] - point[0]) / along[0] * along[1])
