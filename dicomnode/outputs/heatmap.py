"""Colour heat-map overlays: a perceptual colormap and alpha blending, in plain numpy."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

# Anchor points of matplotlib's "inferno" (perceptually uniform, readable in greyscale print),
# interpolated linearly to 256 entries so the package does not depend on matplotlib.
_INFERNO_ANCHORS = np.array(
    [
        (0, 0, 4),
        (31, 12, 72),
        (85, 15, 109),
        (136, 34, 106),
        (186, 54, 85),
        (227, 89, 51),
        (249, 140, 10),
        (249, 201, 50),
        (252, 255, 164),
    ],
    dtype=np.float64,
)


def inferno_lut(entries: int = 256) -> npt.NDArray[np.uint8]:
    """An (entries, 3) uint8 RGB lookup table from dark purple to pale yellow."""
    anchors = np.linspace(0.0, 1.0, len(_INFERNO_ANCHORS))
    positions = np.linspace(0.0, 1.0, entries)
    channels = [np.interp(positions, anchors, _INFERNO_ANCHORS[:, c]) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=1)), 0, 255).astype(np.uint8)


_LUT = inferno_lut()


def window_to_uint8(hu: npt.ArrayLike, center: float, width: float) -> npt.NDArray[np.uint8]:
    """Linear VOI window (center/width in HU) mapped onto 0..255."""
    if width <= 0:
        raise ValueError("window width must be positive")
    values = np.asarray(hu, dtype=np.float64)
    lower = center - width / 2.0
    scaled = (values - lower) / width * 255.0
    return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)


def overlay(
    grey: npt.NDArray[np.uint8],
    anomaly_hu: npt.ArrayLike,
    *,
    threshold_hu: float,
    max_hu: float,
    min_alpha: float = 0.45,
    max_alpha: float = 0.85,
) -> npt.NDArray[np.uint8]:
    """RGB image: `grey` with the anomaly colour-coded where it reaches `threshold_hu`.

    Below the threshold the overlay is fully transparent, so the anatomy stays readable;
    above it colour and opacity grow with the anomaly up to `max_hu`. A fixed HU scale
    (rather than per-slice normalisation) keeps colours comparable across a series.
    """
    anomaly = np.nan_to_num(np.asarray(anomaly_hu, dtype=np.float64), nan=0.0, posinf=max_hu, neginf=0.0)
    if grey.ndim != 2 or anomaly.shape != grey.shape:
        raise ValueError(f"anomaly map {anomaly.shape} does not match the image {grey.shape}")
    if max_hu <= threshold_hu:
        raise ValueError("max_hu must exceed threshold_hu")
    level = np.clip((anomaly - threshold_hu) / (max_hu - threshold_hu), 0.0, 1.0)
    shown = anomaly >= threshold_hu
    # Start a third of the way into the colormap: its darkest end would vanish on dark tissue.
    index = np.rint((0.35 + 0.65 * level) * (len(_LUT) - 1)).astype(np.intp)
    colour = _LUT[index].astype(np.float64)
    alpha = np.where(shown, min_alpha + (max_alpha - min_alpha) * level, 0.0)[..., np.newaxis]
    base = np.repeat(grey[..., np.newaxis], 3, axis=2).astype(np.float64)
    blended = base * (1.0 - alpha) + colour * alpha
    logger.debug("overlay covers %d of %d pixels", int(shown.sum()), shown.size)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def hottest_region(
    anomaly_hu: npt.ArrayLike, *, threshold_hu: float, fraction: float = 0.5
) -> tuple[int, int, int, int] | None:
    """Bounding box (row0, col0, row1, col1; last row and column included) of the hottest blob.

    The blob is the 4-connected set of pixels around the peak that reach both `threshold_hu`
    and `fraction` of the peak; None when nothing reaches the threshold.
    """
    anomaly = np.nan_to_num(np.asarray(anomaly_hu, dtype=np.float64), nan=0.0)
    if anomaly.ndim != 2 or anomaly.size == 0:
        raise ValueError("anomaly map must be a non-empty 2-D array")
    peak = float(anomaly.max())
    if peak < threshold_hu:
        return None
    mask = anomaly >= max(threshold_hu, fraction * peak)
    blob = np.zeros_like(mask)
    blob[np.unravel_index(int(np.argmax(anomaly)), anomaly.shape)] = True
    # Grow from the peak inside the mask until stable (binary reconstruction by dilation).
    while True:
        grown = blob.copy()
        grown[1:, :] |= blob[:-1, :]
        grown[:-1, :] |= blob[1:, :]
        grown[:, 1:] |= blob[:, :-1]
        grown[:, :-1] |= blob[:, 1:]
        grown &= mask
        if np.array_equal(grown, blob):
            break
        blob = grown
    rows = np.flatnonzero(blob.any(axis=1))
    cols = np.flatnonzero(blob.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])
