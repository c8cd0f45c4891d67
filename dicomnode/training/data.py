"""Training pairs for the pseudo-healthy model, generated on the fly from phantoms.

A pair is a lesioned slice and its exact healthy twin (same head, pose and noise), both on
the model grid (256x256 covering the reconstruction field of view) and brain-windowed to
0..1. Rendering a study costs seconds, so studies are kept in a bounded pool that is
refreshed with new ones as training goes on; each study gives every slice its lesion
touches plus one healthy slice from each third of the coverage.

With `vary_texture`, each study also gets its own noise level, noise grain and kernel blur,
drawn over a range wider than the three scanner profiles span (TEXTURE_RANGES): a scanner
whose reconstruction is smoother or grainier than those three must not make healthy
texture look like small lesions.

With `scanner_matrix_share`, that share of studies is rendered at 512x512, the matrix scanners
send, and brought to the model grid as the node brings a series (clipped to the window, then
each 2x2 block averaged). A 512 rendering halved is softer than a 256 one, and 0.8.0, trained
on 256 renderings only, takes the softer anatomy for something to restore (the card's "Why 512
scores lower"). Which studies are so rendered follows from their seeds alone, so a share of 0
keeps the data of the runs before it.

With `extra_pitch_deg`, each study's head is also pitched (turned about its left-right axis)
by an angle drawn uniformly within that many degrees, on top of the drawn pose's ±12: heads lie
flexed or extended further than that, and a scanner that does not tilt its gantry leaves the
pitch in the slices (the card's "Gantry tilt and head pitch"). The angle follows from the
study's seed alone, so 0 keeps the data of the runs before it.

With `older_subdurals`, that share of subdural studies holds blood days old (isodense to the
cortex) or weeks old (hypodense), half each, instead of fresh clot: a chronic subdural is as
much a finding as an acute one, and a network that only saw bright ones takes a dark crescent
under the skull for cerebrospinal fluid. Which studies, from their seeds alone, so a share of 0
keeps the data of the runs before it.

With `workers`, studies are rendered ahead by that many processes, so a GPU is not left
waiting on one CPU core. Which studies arrive, and in which order, does not depend on the
number of workers (any N >= 1 gives the same data), but differs from rendering in-process
(N = 0), whose lesion draws share the batch generator: the shipped CPU runs keep theirs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomnode.generators.ct import resample_slices, to_model_grid
from dicomnode.phantoms.ahead import rendered_ahead
from dicomnode.phantoms.lesions import LESION_KINDS, kind_probabilities
from dicomnode.phantoms.vendors import ScannerTexture
from dicomnode.phantoms.volume import MAX_TURN_DEG, make_pair
from dicomnode.training.model import HU_WINDOW

logger = logging.getLogger(__name__)

MODEL_MATRIX = 256
SCANNER_MATRIX = 512  # what scanners send; the node resamples it to MODEL_MATRIX
THICKNESSES = (1.0, 2.5, 3.0, 5.0)
# Uniform ranges for `vary_texture`: noise std at 5 mm (HU), noise grain and kernel blur
# (Gaussian sigma, pixels at 512). The profiles span 3-7 HU, 0.7-1.2 px and 0.7-1.2 px.
TEXTURE_RANGES = {"noise_hu": (2.5, 7.5), "noise_grain_px": (0.5, 2.4), "kernel_blur_px": (0.5, 2.4)}


def window(hu: np.ndarray) -> np.ndarray:
    """HU -> model input: clip to HU_WINDOW and scale to 0..1 (the manifest's preprocessing)."""
    low, high = HU_WINDOW
    out: np.ndarray = ((np.clip(hu.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)
    return out


@dataclass
class StudySlices:
    inputs: np.ndarray  # (n, H, W) float16, windowed
    targets: np.ndarray  # (n, H, W) float16, windowed healthy twin
    masks: np.ndarray  # (n, H, W) bool lesion mask
    kind: str | None


def random_texture(rng: np.random.Generator) -> ScannerTexture:
    """A scanner texture drawn uniformly from TEXTURE_RANGES."""
    noise, grain, blur = (float(rng.uniform(*TEXTURE_RANGES[key])) for key in
                          ("noise_hu", "noise_grain_px", "kernel_blur_px"))
    return ScannerTexture(noise_hu=(noise, noise), noise_grain_px=grain, kernel_blur_px=blur)


def render(
    seed: int, lesion: str | None, matrix: int = MODEL_MATRIX, *, vary_texture: bool = False,
    healthy_slices: int = 1, scanner_matrix: bool = False, head_pitch_deg: float = 0.0,
    subdural_age: str = "acute",
) -> StudySlices:
    """One study's training slices: the lesion's, and `healthy_slices` from each third of the
    coverage; `lesion=None` gives identity examples only. With `scanner_matrix`, rendered at
    SCANNER_MATRIX and resampled to `matrix` as the node resamples a series; `head_pitch_deg`
    pitches the head on top of its drawn pose; `subdural_age` ages a subdural's blood."""
    rng = np.random.default_rng(seed)
    thickness = float(rng.choice(THICKNESSES))
    texture = random_texture(rng) if vary_texture else None
    study, twin = make_pair(
        seed, lesion, slice_thickness_mm=thickness, matrix=SCANNER_MATRIX if scanner_matrix else matrix,
        slices="lesion", texture=texture, healthy_slices=healthy_slices, head_pitch_deg=head_pitch_deg,
        subdural_age=subdural_age,
    )
    assert twin is not None
    inputs, targets, masks = study.hu, twin, study.lesion_mask
    if scanner_matrix:
        grid = (matrix, matrix)
        inputs, targets = (to_model_grid(hu, HU_WINDOW, grid) for hu in (inputs, targets))
        masks = resample_slices(masks.astype(np.float32), grid) > 0  # any lesion in the block
    return StudySlices(
        inputs=window(inputs).astype(np.float16),
        targets=window(targets).astype(np.float16),
        masks=masks,
        kind=lesion,
    )


def at_scanner_matrix(seed: int, share: float) -> bool:
    """Whether study `seed` is rendered at SCANNER_MATRIX, from its seed alone (its own stream)."""
    return share > 0 and bool(np.random.default_rng([seed, 2]).random() < share)


def extra_pitch(seed: int, limit_deg: float) -> float:
    """Study `seed`'s extra head pitch, uniform within ±`limit_deg`, from its seed alone (its own
    stream); 0 when `limit_deg` is 0."""
    if not 0.0 <= limit_deg <= MAX_TURN_DEG:
        raise ValueError(f"extra head pitch must be within 0-{MAX_TURN_DEG:g} degrees, got {limit_deg:g}")
    if limit_deg == 0.0:
        return 0.0
    return float(np.random.default_rng([seed, 3]).uniform(-limit_deg, limit_deg))


def subdural_age(seed: int, older_share: float) -> str:
    """Study `seed`'s subdural age: with probability `older_share` days or weeks old (half each),
    else acute; from its seed alone (its own stream)."""
    if not 0.0 <= older_share <= 1.0:
        raise ValueError(f"share of older subdurals must be within 0-1, got {older_share:g}")
    draw = np.random.default_rng([seed, 4]).random()
    if draw >= older_share:
        return "acute"
    return "subacute" if draw < older_share / 2 else "chronic"


class SlicePool:
    """A bounded, refreshable pool of rendered studies from which batches are drawn."""

    def __init__(
        self,
        seed: int,
        capacity: int,
        healthy_fraction: float = 0.15,
        kind_weights: Mapping[str, float] | None = None,
        vary_texture: bool = False,
        workers: int = 0,
        healthy_slices: int = 1,
        scanner_matrix_share: float = 0.0,
        extra_pitch_deg: float = 0.0,
        older_subdurals: float = 0.0,
    ) -> None:
        self.capacity = capacity
        self.older_subdurals = older_subdurals
        self.extra_pitch_deg = extra_pitch_deg
        self.vary_texture = vary_texture
        self.healthy_slices = healthy_slices
        self.scanner_matrix_share = scanner_matrix_share
        self.lesion_probabilities = kind_probabilities(kind_weights) if kind_weights else None
        self.healthy_fraction = healthy_fraction
        self.studies: deque[StudySlices] = deque(maxlen=capacity)
        self._next_seed = seed * 100_003 + 1
        self._rng = np.random.default_rng(seed)
        self.rendered = 0
        self._ahead: Generator[StudySlices, None, None] | None = None
        if workers > 0:
            # Own generator for the study plan: the renders run ahead of the batch draws.
            self._ahead = rendered_ahead(render, self._plan(np.random.default_rng([seed, 1])), workers)

    def _draw_study(self, rng: np.random.Generator) -> tuple[int, str | None]:
        seed = self._next_seed
        self._next_seed += 1
        lesion: str | None = None
        if rng.random() >= self.healthy_fraction:
            if self.lesion_probabilities is None:
                lesion = LESION_KINDS[int(rng.integers(len(LESION_KINDS)))]
            else:
                lesion = LESION_KINDS[int(rng.choice(len(LESION_KINDS), p=self.lesion_probabilities))]
        return seed, lesion

    def _plan(self, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """The render jobs of the studies to come, drawn as they are taken."""
        while True:
            seed, lesion = self._draw_study(rng)
            yield {"seed": seed, "lesion": lesion, **self._render_options(seed, lesion)}

    def _render_options(self, seed: int, lesion: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "vary_texture": self.vary_texture, "healthy_slices": self.healthy_slices,
            "scanner_matrix": at_scanner_matrix(seed, self.scanner_matrix_share),
        }
        if self.extra_pitch_deg:  # left out at 0, so the render calls of earlier runs stay as they were
            options["head_pitch_deg"] = extra_pitch(seed, self.extra_pitch_deg)
        if self.older_subdurals and lesion == "sdh":  # likewise
            options["subdural_age"] = subdural_age(seed, self.older_subdurals)
        return options

    def add(self) -> None:
        """Add the next study of the plan (waiting for its render when it runs ahead in a worker)."""
        if self._ahead is None:
            seed, lesion = self._draw_study(self._rng)
            study = render(seed, lesion, **self._render_options(seed, lesion))
        else:
            study = next(self._ahead)
        self.studies.append(study)
        self.rendered += 1

    def close(self) -> None:
        """Stop the render workers (a no-op without them)."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def batch(
        self, size: int, crop: int, full_width: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, targets, masks), each (size, 1, crop, crop); about 3/4 of items show a lesion.

        With `full_width`, crops take whole rows (size, 1, crop, W): the left-right mirror of
        the crop is then the mirror of the slice about its centre, as at inference.
        """
        xs, ys, ms = [], [], []
        for _ in range(size):
            study = self.studies[int(self._rng.integers(len(self.studies)))]
            with_lesion = np.flatnonzero(study.masks.any(axis=(1, 2)))
            if len(with_lesion) and self._rng.random() < 0.75:
                k = int(self._rng.choice(with_lesion))
                x, y, m = study.inputs[k], study.targets[k], study.masks[k]
            else:
                # Identity example: a healthy slice, or the healthy twin of a lesioned one.
                k = int(self._rng.integers(len(study.inputs)))
                y = study.targets[k]
                x, m = y, np.zeros(y.shape, dtype=bool)
            x, y, m = self._crop(x, y, m, crop, full_width)
            if self._rng.random() < 0.5:
                x, y, m = x[:, ::-1], y[:, ::-1], m[:, ::-1]
            xs.append(x)
            ys.append(y)
            ms.append(m)
        stack = [np.ascontiguousarray(np.stack(a)[:, None]) for a in (xs, ys, ms)]
        return stack[0].astype(np.float32), stack[1].astype(np.float32), stack[2]

    def _crop(
        self, x: np.ndarray, y: np.ndarray, m: np.ndarray, crop: int, full_width: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = x.shape[0]
        if crop >= size:
            return x, y, m
        if m.any() and self._rng.random() < 0.8:
            rows, cols = np.nonzero(m)
            i = int(self._rng.integers(len(rows)))
            cr, cc = (
                rows[i] + self._rng.integers(-crop // 4, crop // 4 + 1),
                cols[i] + self._rng.integers(-crop // 4, crop // 4 + 1),
            )
        else:
            cr, cc = size // 2 + self._rng.integers(-40, 41), size // 2 + self._rng.integers(-40, 41)
        r0 = int(np.clip(cr - crop // 2, 0, size - crop))
        c0 = int(np.clip(cc - crop // 2, 0, size - crop))
        window_ = (slice(r0, r0 + crop), slice(None) if full_width else slice(c0, c0 + crop))
        return x[window_], y[window_], m[window_]
