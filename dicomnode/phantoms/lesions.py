"""Pathologies drawn into the template-space HU volume, each with its occupancy fraction.

Every lesion changes the HU volume in place inside a bounding box and returns the
fraction of each voxel it occupies; the volume module resamples that fraction to the
output grid to make the boolean lesion mask. A size class is met by drawing again until
the lesion's volume on the template grid falls inside the class's range.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from scipy import ndimage

from dicomnode.phantoms.anatomy import Tissues, intracranial_fraction
from dicomnode.phantoms.template import Anatomy

logger = logging.getLogger(__name__)

LESION_KINDS: tuple[str, ...] = ("ich", "sdh", "edh", "sah", "infarct", "mass")
LESION_NAMES: dict[str, str] = {
    "ich": "intraparenchymal haemorrhage",
    "sdh": "subdural haematoma",
    "edh": "epidural haematoma",
    "sah": "subarachnoid haemorrhage",
    "infarct": "hypodense infarct",
    "mass": "mass with midline shift",
}
SIZE_CLASSES: tuple[str, ...] = ("small", "medium", "large")
# Lesion volume (ml) each size class promises on the output grid (mask = slab >= 30 % lesion).
SIZE_CLASS_ML: dict[str, tuple[float, float]] = {
    "small": (0.02, 6.0),
    "medium": (1.0, 50.0),
    "large": (10.0, 400.0),
}
# Narrower targets on the template grid leave room for head scaling and resampling.
_TARGET_ML: dict[str, tuple[float, float]] = {
    "small": (0.15, 3.0),
    "medium": (2.0, 28.0),
    "large": (16.0, 250.0),
}
# Subdural blood by age (HU): fresh clot; days old, isodense to the cortex as it lyses; weeks
# old, a hypodense fluid collection. Training draws fresh blood unless `--older-subdurals`.
SUBDURAL_AGES: dict[str, tuple[float, float]] = {
    "acute": (50.0, 80.0),
    "subacute": (30.0, 45.0),
    "chronic": (8.0, 25.0),
}
# With mass effect, the share of a collection's thickness by which the brain moves at the septum
# pellucidum: in life a subdural's midline shift is mostly within its thickness.
MIDLINE_REACH = (0.35, 0.85)
_FIXED_RIM_MM = 3.0
_SUBDURAL_AGE_WORDS = {"acute": "fresh", "subacute": "days old, isodense", "chronic": "weeks old, hypodense"}


def describe_subdural_age(age: str) -> str:
    """E.g. 'weeks old, hypodense (8-25 HU)': one wording for evaluation conditions and model cards."""
    low, high = SUBDURAL_AGES[age]
    return f"{_SUBDURAL_AGE_WORDS[age]} ({low:g}-{high:g} HU)"


_SIZE_INDEX = {name: i for i, name in enumerate(SIZE_CLASSES)}
_TRIES = 25

Box = tuple[slice, slice, slice]


@dataclass
class Lesion:
    """A lesion on the template grid: its box and the fraction of each voxel it occupies."""

    kind: str
    size: str
    box: Box
    fraction: np.ndarray
    details: dict[str, float] = field(default_factory=dict)

    @property
    def volume_ml(self) -> float:
        return float(self.fraction.sum()) / 1000.0


def add_lesion(
    hu: np.ndarray, anatomy: Anatomy, tissues: Tissues, kind: str, size: str, rng: np.random.Generator,
    subdural_age: str = "acute", mass_effect: bool = False,
) -> Lesion:
    """Draw a lesion of `kind` and `size` into `hu` (modified in place) and return it.

    `subdural_age` (SUBDURAL_AGES) sets a subdural's density; its shape is drawn as at any age.
    With `mass_effect` a subdural or epidural collection pushes the brain towards the other side
    (`details["midline_shift_mm"]`, `details["septum_shift_mm"]`) instead of taking the place of
    its surface; masses always push."""
    if kind not in LESION_KINDS:
        raise ValueError(f"unknown lesion kind {kind!r}; expected one of {', '.join(LESION_KINDS)}")
    if size not in SIZE_CLASSES:
        raise ValueError(f"unknown lesion size {size!r}; expected one of {', '.join(SIZE_CLASSES)}")
    if subdural_age not in SUBDURAL_AGES:
        raise ValueError(f"unknown subdural age {subdural_age!r}; expected one of {', '.join(SUBDURAL_AGES)}")
    drafter = _DRAFTERS[kind] if kind != "sdh" else partial(_draft_sdh, age=subdural_age)
    low, high = _TARGET_ML[size]
    best: tuple[float, _Draft] | None = None
    for _ in range(_TRIES):
        draft = drafter(anatomy, tissues, _SIZE_INDEX[size], rng)
        vol = float(draft.fraction.sum()) / 1000.0
        miss = (
            0.0 if low <= vol <= high else min(abs(np.log(vol / low + 1e-9)), abs(np.log(vol / high + 1e-9)))
        )
        if best is None or miss < best[0]:
            best = (miss, draft)
        if miss == 0.0:
            break
    assert best is not None
    draft = best[1]
    if mass_effect and kind in ("sdh", "edh"):  # drawn after the shape, which stays as without
        draft = _pushing(draft, anatomy, tissues, rng)
    draft.paint(hu)
    return Lesion(kind, size, draft.box, draft.fraction.astype(np.float32), draft.details)


@dataclass
class _Draft:
    box: Box
    fraction: np.ndarray
    paint: Callable[[np.ndarray], None]
    details: dict[str, float] = field(default_factory=dict)
    on_table: np.ndarray | None = None  # a collection's seed voxel on the inner table


def _box(anatomy: Anatomy, center: np.ndarray, radius: float) -> tuple[Box, tuple[np.ndarray, ...]]:
    """A box around `center` (voxel) and its RAS-mm offsets from the centre, as open grids."""
    lo = np.maximum(np.floor(center - radius - 2).astype(int), 0)
    hi = np.minimum(np.ceil(center + radius + 3).astype(int), np.array(anatomy.shape))
    box: Box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    gx, gy, gz = np.ogrid[box[0], box[1], box[2]]
    return box, (gx - center[0], gy - center[1], gz - center[2])


def septum_points(anatomy: Anatomy) -> np.ndarray:
    """Template voxels (n, 3) of the septum pellucidum: on the midsagittal plane, with a lateral
    ventricle within 6 mm on either side. Where radiologists measure a midline shift. (The
    largest deep CSF space is the lateral ventricles, joined through the third.)"""
    cached = _SEPTUM.get(id(anatomy))
    if cached is not None:
        return cached
    everywhere = (slice(None), slice(None), slice(None))
    deep_csf = (csf_fraction_in(anatomy, everywhere) > 0.5) & (anatomy.sd < -25.0)
    labels, count = ndimage.label(deep_csf)
    sizes = ndimage.sum_labels(deep_csf, labels, np.arange(1, count + 1))
    ventricles = labels == 1 + int(np.argmax(sizes))  # both lateral ventricles, joined below
    mid = round(-anatomy.origin[0])  # x = 0 (RAS)
    ys, zs = np.nonzero(ventricles[mid - 6:mid].any(axis=0) & ventricles[mid + 1:mid + 7].any(axis=0))
    points = np.stack([np.full_like(ys, mid), ys, zs], axis=1)
    _SEPTUM[id(anatomy)] = points
    return points


def _septum_shift(anatomy: Anatomy, box: Box, moved_x: np.ndarray) -> float:
    """Mean displacement along RAS x (mm, + to the patient's right) of the septum, from the
    displacement `moved_x` over `box` (zero outside it)."""
    points = septum_points(anatomy)
    if not points.size:
        return 0.0
    lo = np.array([b.start for b in box])
    hi = np.array([b.stop for b in box])
    inside = np.all((points >= lo) & (points < hi), axis=1)
    moved = np.zeros(len(points))
    local = points[inside] - lo
    moved[inside] = np.broadcast_to(moved_x, tuple(hi - lo))[local[:, 0], local[:, 1], local[:, 2]]
    return float(moved.mean())


_SEPTUM: dict[int, np.ndarray] = {}


def _pick(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    point: np.ndarray = points[rng.integers(len(points))].astype(np.float64)
    return point


def _lobulated_radius(offsets: tuple[np.ndarray, ...], rng: np.random.Generator) -> np.ndarray:
    """Distance scaled by a random ellipsoid with lobulated edges, ~1 on the boundary of a unit blob."""
    axes = rng.uniform(0.75, 1.3, size=3)
    rot = _random_rotation(rng)
    u = [sum(rot[i, j] * offsets[j] for j in range(3)) / axes[i] for i in range(3)]
    r = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2) + 1e-6
    lobes = np.zeros_like(r)
    for _ in range(3):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        lobes += rng.uniform(0.03, 0.09) * np.cos(3.0 * (u[0] * v[0] + u[1] * v[1] + u[2] * v[2]) / r)
    out: np.ndarray = r / (1.0 + lobes)
    return out


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    out: np.ndarray = q * np.sign(np.diag(r))
    return out


def _draft_ich(anatomy: Anatomy, tissues: Tissues, size: int, rng: np.random.Generator) -> _Draft:
    radius = float(rng.uniform(*((2.5, 5.5), (6.0, 12.0), (14.0, 24.0))[size]))
    for _ in range(50):
        center = _pick(anatomy.parenchyma_points, rng)
        if anatomy.sd[tuple(center.astype(int))] < -(radius * 1.2 + 3.0):
            break
    box, off = _box(anatomy, center, radius * 1.6)
    r = _lobulated_radius(off, rng) / radius
    icv = intracranial_fraction(anatomy.sd[box] + 1.0)
    blood = (np.clip((1.0 - r) * radius + 0.5, 0.0, 1.0) * icv).astype(np.float32)
    value = float(rng.uniform(55.0, 90.0))
    # Perihaematomal oedema: hypodense rim in the parenchyma, abnormal but not blood.
    rim = np.clip((1.35 - r) * radius, 0.0, 1.0) * (1.0 - blood) * (anatomy.gm[box] + anatomy.wm[box])
    edema = float(rng.uniform(-7.0, -3.0)) if size > 0 else 0.0

    def paint(hu: np.ndarray) -> None:
        hu[box] += rim * edema
        hu[box] = hu[box] * (1.0 - blood) + blood * value

    return _Draft(box, blood, paint, {"radius_mm": radius, "hu": value})


def _draft_extra_axial(
    anatomy: Anatomy, size: int, rng: np.random.Generator, lens: bool
) -> tuple[Box, np.ndarray, np.ndarray, dict[str, float]]:
    """A subdural crescent or epidural lens against the inner table: box, fraction, seed voxel
    on the table and its shape."""
    if lens:  # epidural: biconvex, thick and short
        thick = float(rng.uniform(*((3.0, 6.0), (8.0, 14.0), (15.0, 28.0))[size]))
        extent = float(rng.uniform(*((12.0, 20.0), (22.0, 32.0), (32.0, 45.0))[size]))
    else:  # subdural: crescent, thin and long
        thick = float(rng.uniform(*((2.0, 4.0), (5.0, 9.0), (10.0, 18.0))[size]))
        extent = float(rng.uniform(*((20.0, 35.0), (40.0, 60.0), (60.0, 85.0))[size]))
    center = _pick(anatomy.surface_points, rng)
    box, off = _box(anatomy, center, extent)
    d = np.sqrt(off[0] ** 2 + off[1] ** 2 + off[2] ** 2) / extent
    profile = np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0)) if lens else np.clip(1.0 - d * d, 0.0, 1.0)
    depth = -anatomy.sd[box]
    frac = np.clip(thick * profile - depth + 0.5, 0.0, 1.0) * np.clip(depth + 0.5, 0.0, 1.0)
    # Neither crosses the falx: keep to the hemisphere of the seed point.
    side = np.sign(center[0] + anatomy.origin[0])
    x_ras = (np.arange(box[0].start, box[0].stop) + anatomy.origin[0])[:, None, None]
    frac = frac * np.clip(side * x_ras - 1.0, 0.0, 1.0)
    return box, frac.astype(np.float32), center, {"thickness_mm": thick, "extent_mm": extent}


def _intracranial_content(anatomy: Anatomy, tissues: Tissues, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The intracranial fraction of each voxel in `box` and the HU of its intracranial part."""
    icv = intracranial_fraction(anatomy.sd[box])
    gm, wm = anatomy.gm[box], anatomy.wm[box]
    csf = np.clip(icv - gm - wm, 0.0, 1.0)
    return icv, (gm * tissues.gm + wm * tissues.wm + csf * tissues.csf) / np.maximum(icv, 1e-3)


def _displace_intracranial(
    anatomy: Anatomy, tissues: Tissues, box: Box, frac: np.ndarray, value: float
) -> Callable[[np.ndarray], None]:
    """Blood takes the place of intracranial content only, never of the bone sharing a voxel."""
    icv, content = _intracranial_content(anatomy, tissues, box)
    share = np.minimum(frac, icv)

    def paint(hu: np.ndarray) -> None:
        hu[box] += share * (value - content)

    return paint


def _pushing_collection(
    anatomy: Anatomy, tissues: Tissues, box: Box, frac: np.ndarray, value: float, center: np.ndarray,
    thickness: float, extent: float, reach_share: float,
) -> tuple[Callable[[np.ndarray], None], float, float]:
    """Paint for a collection that pushes the brain away from the skull instead of taking its
    place, the midline shift (mm) that follows, largest anywhere on the midsagittal plane, and
    the septum's (`_septum_shift`).

    The brain under the collection moves inwards by its thickness, less with distance from it:
    by `reach_share` of the thickness at the septum pellucidum (the falx bows with it).
    Tissue within _FIXED_RIM_MM of the skull never moves, and nothing is drawn from there, so the
    skull is not pulled inwards.
    """
    towards = anatomy.to_voxel(anatomy.center) - center
    towards /= np.linalg.norm(towards)
    to_septum = max(float(np.linalg.norm(septum_points(anatomy).mean(axis=0) - center)), 10.0)
    sigma = to_septum / float(np.sqrt(2.0 * np.log(1.0 / reach_share)))
    push_box, off = _box(anatomy, center, max(min(2.5 * sigma, 120.0), extent))  # holds `box`
    depth = -anatomy.sd[push_box]
    distance = np.sqrt(off[0] ** 2 + off[1] ** 2 + off[2] ** 2)
    # Sources stay _FIXED_RIM_MM inside the table: interpolation would blend in the bone.
    magnitude = np.minimum(thickness * np.exp(-0.5 * (distance / sigma) ** 2),
                           np.maximum(depth - _FIXED_RIM_MM, 0.0))
    x_ras = (np.arange(push_box[0].start, push_box[0].stop) + anatomy.origin[0])[:, None, None]
    at_midline = np.broadcast_to(np.abs(x_ras) < 1.0, magnitude.shape) & (depth > 0.0)
    midline = float(np.max(np.abs(magnitude * towards[0])[at_midline], initial=0.0))
    septum = _septum_shift(anatomy, push_box, magnitude * towards[0])
    inner = tuple(slice(b.start - p.start, b.stop - p.start) for b, p in zip(box, push_box, strict=True))
    icv, pushed_content = _intracranial_content(anatomy, tissues, push_box)
    share = np.minimum(frac, icv[inner]).astype(np.float32)
    content = np.zeros(anatomy.shape, dtype=np.float32)  # sources may fall just outside push_box
    content[push_box] = pushed_content

    def paint(hu: np.ndarray) -> None:
        source = [np.broadcast_to(o + c, magnitude.shape) - magnitude * t
                  for o, c, t in zip(off, center, towards, strict=True)]
        moved_content = ndimage.map_coordinates(content, source, order=1)[inner]
        hu[push_box] = ndimage.map_coordinates(hu, source, order=1)
        hu[box] += share * (value - moved_content)

    return paint, midline, septum


def _draft_collection(anatomy: Anatomy, tissues: Tissues, size: int, rng: np.random.Generator, lens: bool,
                      hu_range: tuple[float, float]) -> _Draft:
    box, frac, center, details = _draft_extra_axial(anatomy, size, rng, lens)
    value = float(rng.uniform(*hu_range))
    return _Draft(box, frac, _displace_intracranial(anatomy, tissues, box, frac, value),
                  {**details, "hu": value}, on_table=center)


def _pushing(draft: _Draft, anatomy: Anatomy, tissues: Tissues, rng: np.random.Generator) -> _Draft:
    """The same collection, pushing the brain (`_pushing_collection`)."""
    assert draft.on_table is not None
    details = draft.details
    paint, midline, septum = _pushing_collection(
        anatomy, tissues, draft.box, draft.fraction, details["hu"], draft.on_table, details["thickness_mm"],
        details["extent_mm"], float(rng.uniform(*MIDLINE_REACH)))
    return replace(draft, paint=paint,
                   details={**details, "midline_shift_mm": midline, "septum_shift_mm": septum})


def _draft_sdh(anatomy: Anatomy, tissues: Tissues, size: int, rng: np.random.Generator,
               age: str = "acute") -> _Draft:
    return _draft_collection(anatomy, tissues, size, rng, False, SUBDURAL_AGES[age])


def _draft_edh(anatomy: Anatomy, tissues: Tissues, size: int, rng: np.random.Generator) -> _Draft:
    return _draft_collection(anatomy, tissues, size, rng, True, (60.0, 90.0))


# Places where subarachnoid blood collects (RAS mm): sylvian fissures, basal cisterns, convexity.
_SAH_SITES = (
    np.array([42.0, 8.0, -4.0]),
    np.array([-42.0, 8.0, -4.0]),
    np.array([0.0, -6.0, -14.0]),
    np.array([0.0, 10.0, 0.0]),
)


def _draft_sah(anatomy: Anatomy, tissues: Tissues, size: int, rng: np.random.Generator) -> _Draft:
    radius = float(rng.uniform(*((6.0, 11.0), (14.0, 22.0), (28.0, 45.0))[size]))
    if rng.random() < 0.6:
        center = anatomy.to_voxel(_SAH_SITES[rng.integers(len(_SAH_SITES))] + rng.normal(0.0, 4.0, 3))
    else:
        center = _pick(anatomy.surface_points, rng)
        center += (
            6.0
            * (anatomy.to_voxel(anatomy.center) - center)
            / np.linalg.norm(anatomy.to_voxel(anatomy.center) - center)
        )
    box, off = _box(anatomy, center, radius)
    r = _lobulated_radius(off, rng) / radius
    region = np.clip((1.0 - r) * radius + 0.5, 0.0, 1.0)
    csf = csf_fraction_in(anatomy, box)
    # The mask marks voxels that are mostly CSF; the blood replaces only their CSF part.
    frac = (region * np.clip(1.6 * csf, 0.0, 1.0)).astype(np.float32)
    blood = region * csf
    value = float(rng.uniform(50.0, 75.0))

    def paint(hu: np.ndarray) -> None:
        hu[box] += blood * (value - tissues.csf)

    return _Draft(box, frac, paint, {"radius_mm": radius, "hu": value})


def csf_fraction_in(anatomy: Anatomy, box: Box) -> np.ndarray:
    frac: np.ndarray = np.clip(
        intracranial_fraction(anatomy.sd[box]) - anatomy.gm[box] - anatomy.wm[box], 0.0, 1.0
    )
    return frac


# Vascular territories: wedge apex (RAS mm, right side) and axis direction.
_TERRITORIES = {
    "mca": (np.array([22.0, 2.0, 0.0]), np.array([1.0, 0.0, 0.35])),
    "aca": (np.array([6.0, 18.0, 8.0]), np.array([0.15, 0.35, 1.0])),
    "pca": (np.array([14.0, -32.0, 0.0]), np.array([0.2, -1.0, 0.1])),
}


def _draft_infarct(anatomy: Anatomy, tissues: Tissues, size: int, rng: np.random.Generator) -> _Draft:
    name = str(rng.choice(sorted(_TERRITORIES)))
    apex_ras, axis = _TERRITORIES[name]
    side = 1.0 if rng.random() < 0.5 else -1.0
    apex_ras = apex_ras * np.array([side, 1.0, 1.0]) + rng.normal(0.0, 3.0, 3)
    axis = axis * np.array([side, 1.0, 1.0]) + rng.normal(0.0, 0.15, 3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(*((7.0, 11.0), (14.0, 22.0), (28.0, 42.0))[size]))
    depth = float(rng.uniform(*((10.0, 16.0), (28.0, 40.0), (80.0, 90.0))[size]))
    apex = anatomy.to_voxel(apex_ras)
    reach = _distance_to_table(anatomy, apex, axis)
    start = max(reach - depth, 0.0)
    box, off = _box(anatomy, apex, reach + 4.0)
    along = off[0] * axis[0] + off[1] * axis[1] + off[2] * axis[2]
    dist = np.sqrt(off[0] ** 2 + off[1] ** 2 + off[2] ** 2) + 1e-6
    inside = np.clip((np.cos(angle) - along / dist) * -40.0 + 0.5, 0.0, 1.0) * np.clip(
        along - start, 0.0, 1.0
    )
    x_ras = (np.arange(box[0].start, box[0].stop) + anatomy.origin[0])[:, None, None]
    parenchyma = anatomy.gm[box] + anatomy.wm[box]
    frac = (inside * parenchyma * np.clip(side * x_ras - 1.0, 0.0, 1.0)).astype(np.float32)
    delta = float(rng.uniform(-15.0, -8.0))

    def paint(hu: np.ndarray) -> None:
        hu[box] += frac * delta

    return _Draft(box, frac, paint, {"delta_hu": delta, "angle_deg": float(np.rad2deg(angle))})


def _distance_to_table(anatomy: Anatomy, start: np.ndarray, axis: np.ndarray) -> float:
    """March from `start` along `axis` (voxels = mm) until the inner table."""
    for step in range(0, 150):
        p = np.round(start + step * axis).astype(int)
        if np.any(p < 0) or np.any(p >= np.array(anatomy.shape)) or anatomy.sd[tuple(p)] >= 0.0:
            return float(step)
    return 150.0


def _draft_mass(anatomy: Anatomy, tissues: Tissues, size: int, rng: np.random.Generator) -> _Draft:
    radius = float(rng.uniform(*((4.0, 8.0), (10.0, 15.0), (18.0, 27.0))[size]))
    x_ras = anatomy.parenchyma_points[:, 0] + anatomy.origin[0]
    lateral = anatomy.parenchyma_points[np.abs(x_ras) > 18.0]
    for _ in range(80):
        center = _pick(lateral, rng)
        if anatomy.sd[tuple(center.astype(int))] < -(radius + 8.0):
            break
    reach = radius + 40.0
    box, off = _box(anatomy, center, reach)
    r = np.sqrt(off[0] ** 2 + off[1] ** 2 + off[2] ** 2) + 1e-6
    # Tissue outside the mass is pushed outward as if the mass had grown from a point
    # (volume preserving), fading before the skull and the edge of the box.
    push = r - np.cbrt(np.maximum(r**3 - radius**3, 0.0))
    push *= np.clip((-anatomy.sd[box] - 2.0) / 10.0, 0.0, 1.0) * np.clip((reach - r) / 20.0, 0.0, 1.0)
    shift = push / r
    grid = [np.broadcast_to(o + c, r.shape) for o, c in zip(off, center, strict=True)]
    source = [g - o * shift for g, o in zip(grid, off, strict=True)]
    wm_moved = ndimage.map_coordinates(anatomy.wm, source, order=1)
    blob = _lobulated_radius(off, rng) / radius
    core = np.clip((1.0 - blob) * radius + 0.5, 0.0, 1.0).astype(np.float32)
    edema = (np.clip((1.9 - blob) * radius / 3.0, 0.0, 1.0) * wm_moved * (1.0 - core)).astype(np.float32)
    value = float(rng.uniform(36.0, 55.0))
    edema_delta = float(rng.uniform(-12.0, -7.0))
    necrotic = size == 2 and rng.random() < 0.5
    core_hu = np.where(blob < 0.45, value - 25.0, value) if necrotic else np.full_like(core, value)
    midline = float(np.max(np.abs(off[0] * shift)[np.abs(grid[0] + anatomy.origin[0]) < 1.0], initial=0.0))
    septum = _septum_shift(anatomy, box, off[0] * shift)

    def paint(hu: np.ndarray) -> None:
        hu[box] = ndimage.map_coordinates(hu, source, order=1)
        hu[box] += edema * edema_delta
        hu[box] = hu[box] * (1.0 - core) + core * core_hu

    frac = np.maximum(core, np.clip(edema * 2.0, 0.0, 1.0) * (edema > 0.2))
    return _Draft(box, frac, paint, {"radius_mm": radius, "hu": value, "midline_shift_mm": midline,
                                     "septum_shift_mm": septum})


_DRAFTERS: dict[str, Callable[[Anatomy, Tissues, int, np.random.Generator], _Draft]] = {
    "ich": _draft_ich,
    "sdh": _draft_sdh,
    "edh": _draft_edh,
    "sah": _draft_sah,
    "infarct": _draft_infarct,
    "mass": _draft_mass,
}


def kind_probabilities(weights: Mapping[str, float]) -> np.ndarray:
    """Sampling probabilities over LESION_KINDS; kinds not named weigh 1."""
    unknown = sorted(set(weights) - set(LESION_KINDS))
    if unknown:
        raise ValueError(f"unknown lesion kind(s) {', '.join(unknown)}; known: {', '.join(LESION_KINDS)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError("lesion kind weights must not be negative")
    raw = np.array([weights.get(kind, 1.0) for kind in LESION_KINDS], dtype=np.float64)
    if raw.sum() <= 0:
        raise ValueError("at least one lesion kind needs a positive weight")
    probabilities: np.ndarray = raw / raw.sum()
    return probabilities


__all__ = [
    "LESION_KINDS",
    "LESION_NAMES",
    "SIZE_CLASSES",
    "SIZE_CLASS_ML",
    "Lesion",
    "add_lesion",
    "kind_probabilities",
]
