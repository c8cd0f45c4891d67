"""Render a phantom study: place the head in the scanner and sample it on the CT grid.

A study is a template-space HU volume (tissues + one lesion) seen through a random pose
(rotation, translation, head size) and a mild elastic warp, integrated over each slice's
thickness, blurred by the reconstruction kernel and given scanner noise. Random streams are
split by purpose, so the same seed with and without a lesion gives the same head, pose and
noise: the lesion-free study is the lesioned one's exact healthy twin.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from dicomnode.phantoms.anatomy import hu_volume, random_tissues
from dicomnode.phantoms.contrast import add_contrast
from dicomnode.phantoms.lesions import LESION_KINDS, SIZE_CLASSES, Lesion, add_lesion
from dicomnode.phantoms.metal import add_metal, coil, streaks
from dicomnode.phantoms.template import Anatomy, load_anatomy
from dicomnode.phantoms.vendors import PROFILE_MATRIX, VENDORS, ScannerTexture, VendorProfile, vendor_profile

logger = logging.getLogger(__name__)

HU_MIN, HU_MAX = -1024, 3071
DEFAULT_COVERAGE_MM = 160.0
NOISE_CAP_HU = 10.0  # the most noise a training phantom's slices carry (std, HU)
FULL_NOISE_CAP_HU = 30.0  # above any profile's thinnest slices (20 HU at 0.625 mm): no cap
FIELD_OF_VIEW_MM = (220.0, 270.0)  # reconstruction field of view drawn for each phantom
# Coverage is centred this far above the intracranial centre: skull base to vertex.
_COVERAGE_OFFSET_MM = 10.0
MAX_TURN_DEG = 30.0  # gantry tilt, and each turn of the head added to the drawn pose
# Appending a stream leaves the others as they were (SeedSequence children are keyed by index).
_STREAMS = ("tissues", "pose", "lesion", "noise", "scanner", "contrast", "metal")


@dataclass(frozen=True)
class Pose:
    rotation: np.ndarray  # 3x3, template RAS -> scanner RAS
    translation: np.ndarray  # mm, scanner RAS
    scale: np.ndarray  # per axis, head size
    warp: tuple[tuple[np.ndarray, np.ndarray, float], ...]  # (amplitude vector, wave vector, phase)


@dataclass
class PhantomStudy:
    """One synthetic head CT. Arrays are (slices, rows, cols); slice 0 is the most inferior.

    `spacing` is (slice spacing along the slice normal, row spacing, column spacing) in mm;
    `origin` is the patient (LPS) position of the first voxel's centre; rows run anterior to
    posterior (along LPS (0, cos t, sin t) under a gantry tilt t) and columns right to left,
    as in an axial DICOM image; each next slice starts `table_step_mm` further along z.
    `brain_mask` is the intracranial space (inside the inner table), where the anomaly map is
    computed.
    """

    seed: int
    hu: np.ndarray
    lesion_mask: np.ndarray
    brain_mask: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    slice_thickness_mm: float
    lesion_kind: str | None
    lesion_size: str | None
    lesion_volume_ml: float
    vendor: str
    gantry_tilt_deg: float = 0.0
    head_pitch_deg: float = 0.0  # added to the drawn pose, as are the next two
    head_roll_deg: float = 0.0
    head_yaw_deg: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def plane_turn(self) -> np.ndarray:
        """How the gantry tilt turns the slice plane (LPS rotation; the identity untilted)."""
        return about_left_right(self.gantry_tilt_deg)

    @property
    def table_step_mm(self) -> float:
        """How far the table moves from slice to slice: the slice spacing, or more under a tilted gantry."""
        return self.spacing[0] / math.cos(math.radians(self.gantry_tilt_deg))

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.hu.shape
        return (s[0], s[1], s[2])


def streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(_STREAMS, children, strict=True)}


def make_study(
    seed: int,
    lesion: str | None,
    *,
    slice_thickness_mm: float | None = None,
    matrix: int = 512,
    lesion_size: str | None = None,
    vendor: str | None = None,
    coverage_mm: float = DEFAULT_COVERAGE_MM,
    field_of_view_mm: float | None = None,
    gantry_tilt_deg: float = 0.0,
    head_pitch_deg: float = 0.0,
    head_roll_deg: float = 0.0,
    head_yaw_deg: float = 0.0,
    noise_cap_hu: float = NOISE_CAP_HU,
    contrast_hu: float | None = None,
    metal: bool = False,
    subdural_age: str = "acute",
    mass_effect: bool = False,
) -> PhantomStudy:
    """A synthetic head CT (non-contrast unless `contrast_hu`); `lesion` is one of LESION_KINDS or None
    for a healthy head."""
    return make_pair(
        seed,
        lesion,
        slice_thickness_mm=slice_thickness_mm,
        matrix=matrix,
        lesion_size=lesion_size,
        vendor=vendor,
        coverage_mm=coverage_mm,
        field_of_view_mm=field_of_view_mm,
        gantry_tilt_deg=gantry_tilt_deg,
        head_pitch_deg=head_pitch_deg,
        head_roll_deg=head_roll_deg,
        head_yaw_deg=head_yaw_deg,
        healthy_twin=False,
        noise_cap_hu=noise_cap_hu,
        contrast_hu=contrast_hu,
        metal=metal,
        subdural_age=subdural_age,
        mass_effect=mass_effect,
    )[0]


def make_pair(
    seed: int,
    lesion: str | None,
    *,
    slice_thickness_mm: float | None = None,
    matrix: int = 512,
    lesion_size: str | None = None,
    vendor: str | None = None,
    coverage_mm: float = DEFAULT_COVERAGE_MM,
    field_of_view_mm: float | None = None,
    gantry_tilt_deg: float = 0.0,
    head_pitch_deg: float = 0.0,
    head_roll_deg: float = 0.0,
    head_yaw_deg: float = 0.0,
    healthy_twin: bool = True,
    slices: np.ndarray | str | None = None,
    texture: ScannerTexture | None = None,
    healthy_slices: int = 1,
    noise_cap_hu: float = NOISE_CAP_HU,
    contrast_hu: float | None = None,
    metal: bool = False,
    subdural_age: str = "acute",
    mass_effect: bool = False,
) -> tuple[PhantomStudy, np.ndarray | None]:
    """The study and, with `healthy_twin`, the same study's HU without its lesion (same noise).

    `slices` renders only those slice indices, or with "lesion" only the slices the lesion
    touches and `healthy_slices` from each third of the coverage (training uses it to save
    time); `details["slices"]` lists them.
    `texture` replaces the scanner profile's noise and blur (its headers stay).
    `field_of_view_mm` replaces the drawn reconstruction field of view (FIELD_OF_VIEW_MM); the same
    head, pose and lesion otherwise.
    `gantry_tilt_deg` scans the head with the gantry tilted (slice planes rotated about the
    patient's left-right axis, the table stepping along z): the slices are sheared, so the
    head moves up or down the image from slice to slice. Training never tilted.
    `head_pitch_deg` turns the drawn pose further about the patient's left-right axis through
    the scanner's isocentre, the way the gantry tilts: with both equal, the slices cut the head
    as the untilted scan of the drawn pose does, only sheared. Training drew pitch within ±12°.
    `head_roll_deg` turns it about its front-back axis (positive: the left ear up) and
    `head_yaw_deg` about its head-foot axis (positive: the nose to the left), both through the
    isocentre, as an emergency patient who cannot keep still lies. Training drew roll within
    ±5° and yaw within ±8°.
    `noise_cap_hu` caps the noise that thin slices gain (training: NOISE_CAP_HU); a profile's
    noise at 5 mm grows as 1/sqrt(thickness), to 8-20 HU at 0.625 mm uncapped, as real thin
    soft-tissue series read.
    `contrast_hu` enhances the head as after an iodine bolus, vessel blood at that density
    (`phantoms.contrast`); the twin is enhanced alike. Training never saw contrast.
    `metal` puts a coil into an aneurysm and casts its streaks over the slices that hold it
    (`phantoms.metal`); the twin has both. Training never saw metal.
    `subdural_age` (`lesions.SUBDURAL_AGES`) sets a subdural's density: acute as in training,
    or days or weeks old (isodense, hypodense); the same shape at any age.
    `mass_effect` makes a subdural or epidural collection push the brain towards the other side
    (`details["midline_shift_mm"]`) instead of taking the place of its surface, as a large one
    does in life; the twin is the unpushed head. Training's collections never pushed.
    """
    if lesion is not None and lesion not in LESION_KINDS:
        raise ValueError(f"unknown lesion kind {lesion!r}; expected one of {', '.join(LESION_KINDS)}")
    if matrix not in (256, 512):
        raise ValueError(f"matrix must be 256 or 512, got {matrix}")
    rng = streams(seed)
    anatomy = load_anatomy()
    scanner = rng["scanner"]
    profile = (
        vendor_profile(vendor) if vendor is not None
        else VENDORS[sorted(VENDORS)[scanner.integers(len(VENDORS))]]
    )
    if texture is not None:
        profile = texture.apply(profile)
    thickness = (
        float(slice_thickness_mm) if slice_thickness_mm else float(scanner.choice([1.0, 2.5, 3.0, 5.0]))
    )
    if not 0.5 <= thickness <= 10.0:
        raise ValueError(f"slice thickness must be within 0.5-10 mm, got {thickness}")
    fov = float(scanner.uniform(*FIELD_OF_VIEW_MM))  # drawn in any case: the later draws stay the same
    if field_of_view_mm is not None:
        if not 120.0 <= field_of_view_mm <= 500.0:
            raise ValueError(f"field of view must be within 120-500 mm, got {field_of_view_mm:g}")
        fov = float(field_of_view_mm)
    for name, angle in (("gantry tilt", gantry_tilt_deg), ("head pitch", head_pitch_deg),
                        ("head roll", head_roll_deg), ("head yaw", head_yaw_deg)):
        if not -MAX_TURN_DEG <= angle <= MAX_TURN_DEG:
            raise ValueError(f"{name} must be within ±{MAX_TURN_DEG:g} degrees, got {angle:g}")
    tissues = random_tissues(rng["tissues"])
    pose = _turned(_random_pose(rng["pose"]), head_pitch_deg, head_roll_deg, head_yaw_deg)
    healthy = hu_volume(anatomy, tissues)
    if contrast_hu is not None:
        add_contrast(healthy, anatomy, contrast_hu, rng["contrast"])
    metal_drawn = coil(anatomy, rng["metal"]) if metal else None
    if metal_drawn is not None:
        add_metal(healthy, metal_drawn[0], metal_drawn[1])
    found: Lesion | None = None
    hu = healthy
    if lesion is not None:
        size = lesion_size or SIZE_CLASSES[int(rng["lesion"].integers(len(SIZE_CLASSES)))]
        hu = healthy.copy()
        found = add_lesion(hu, anatomy, tissues, lesion, size, rng["lesion"], subdural_age, mass_effect)
    n_slices = max(1, round(coverage_mm / thickness))
    tilt = math.radians(gantry_tilt_deg)
    grid = _Grid(anatomy, pose, matrix, fov, thickness, n_slices, np.arange(n_slices), tilt)
    mask = np.zeros((n_slices, matrix, matrix), dtype=bool)
    if found is not None:
        mask = grid.upsample(grid.sample_box_mean(found.fraction, found.box)) >= 0.3
    voxel_ml = thickness * (fov / matrix) ** 2 / 1000.0
    volume_ml = float(mask.sum()) * voxel_ml
    if slices is not None:
        index = _pick_slices(slices, mask, n_slices, scanner, healthy_slices)
        grid = _Grid(anatomy, pose, matrix, fov, thickness, n_slices, index, tilt)
        mask = mask[index]
    noise = _noise(rng["noise"], (n_slices, matrix, matrix), profile, thickness, noise_cap_hu)[grid.index]
    if metal_drawn is not None:
        metal_map = grid.upsample(grid.sample_box_mean(metal_drawn[0], metal_drawn[1]))
        noise = noise + streaks(metal_map, fov / matrix, rng["metal"])
    # The twin is sampled at the same coordinates: computed once for both.
    slabs = grid.sample_slabs(hu, healthy) if healthy_twin else grid.sample_slabs(hu)
    image = _finish(slabs[0], profile, grid) + noise
    twin = _to_int16(_finish(slabs[1], profile, grid) + noise) if healthy_twin else None
    brain = grid.upsample(grid.sample_centre(anatomy.sd, cval=100.0)) < 0.0
    spacing = (thickness, fov / matrix, fov / matrix)
    study = PhantomStudy(
        seed=seed,
        hu=_to_int16(image),
        lesion_mask=mask,
        brain_mask=brain,
        spacing=spacing,
        origin=grid.origin_lps,
        slice_thickness_mm=thickness,
        lesion_kind=lesion,
        lesion_size=found.size if found else None,
        lesion_volume_ml=volume_ml,
        vendor=profile.key,
        gantry_tilt_deg=float(gantry_tilt_deg),
        head_pitch_deg=float(head_pitch_deg),
        head_roll_deg=float(head_roll_deg),
        head_yaw_deg=float(head_yaw_deg),
        details={"tissues": tissues, **(found.details if found else {}), "fov_mm": fov,
                 "contrast_hu": contrast_hu, "slices": grid.index,
                 **({"subdural_age": subdural_age} if lesion == "sdh" else {}),
                 **({"mass_effect": True} if mass_effect and lesion in ("sdh", "edh") else {}),
                 **(metal_drawn[2] if metal_drawn is not None else {})},
    )
    logger.debug("phantom seed=%d lesion=%s volume=%.2f ml", seed, lesion, study.lesion_volume_ml)
    return study, twin


def _pick_slices(
    slices: np.ndarray | str, mask: np.ndarray, n_slices: int, rng: np.random.Generator, per_third: int = 1
) -> np.ndarray:
    """Explicit indices, or "lesion": every slice the lesion touches plus `per_third` from each third
    of the coverage (all of a third's slices where it has fewer).

    The thirds matter: skull base, mid-brain and vertex look different, and a pseudo-healthy
    model that never saw healthy skull-base slices mistakes its bone edges for blood.
    """
    if not isinstance(slices, str):
        return np.asarray(slices, dtype=int)
    if slices != "lesion":
        raise ValueError(f"slices must be indices or 'lesion', got {slices!r}")
    if per_third < 1:
        raise ValueError(f"healthy slices per third must be at least 1, got {per_third}")
    touched = np.flatnonzero(mask.any(axis=(1, 2)))
    thirds = [third for third in np.array_split(np.arange(n_slices), 3) if third.size]
    if per_third == 1:  # the draw every earlier training run made
        healthy = [np.array([rng.choice(third)]) for third in thirds]
    else:
        healthy = [rng.choice(third, size=min(per_third, third.size), replace=False) for third in thirds]
    return np.unique(np.concatenate([touched, *healthy])).astype(int)


def _to_int16(image: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(np.rint(image), HU_MIN, HU_MAX).astype(np.int16)
    return out


def _random_pose(rng: np.random.Generator) -> Pose:
    yaw, pitch, roll = (
        np.deg2rad(rng.uniform(-8.0, 8.0)),
        np.deg2rad(rng.uniform(-12.0, 12.0)),
        np.deg2rad(rng.uniform(-5.0, 5.0)),
    )
    rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    ry = np.array([[math.cos(roll), 0, math.sin(roll)], [0, 1, 0], [-math.sin(roll), 0, math.cos(roll)]])
    size = rng.uniform(0.92, 1.08)
    warp = tuple(
        (
            rng.normal(0.0, 1.0, 3) * rng.uniform(0.6, 1.6),
            rng.normal(0.0, 1.0, 3) / 1.732 * (2.0 * math.pi / rng.uniform(70.0, 140.0)),
            float(rng.uniform(0.0, 2.0 * math.pi)),
        )
        for _ in range(3)
    )
    return Pose(
        rotation=rz @ rx @ ry,
        translation=np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-5, 5)]),
        scale=size * rng.uniform(0.97, 1.03, 3),
        warp=warp,
    )


def _plane_turn(start: int, end: int, angle_deg: float) -> np.ndarray:
    """The LPS rotation by `angle_deg` that turns patient axis `start` towards axis `end`."""
    angle = math.radians(angle_deg)
    turn = np.eye(3)
    turn[start, start] = turn[end, end] = math.cos(angle)
    turn[end, start], turn[start, end] = math.sin(angle), -math.sin(angle)
    return turn


def about_left_right(angle_deg: float) -> np.ndarray:
    """The LPS rotation by `angle_deg` about the patient's left-right axis that a gantry tilt
    gives the slice plane: (0, 1, 0) turns towards (0, cos, sin)."""
    return _plane_turn(1, 2, angle_deg)


_LPS_RAS = np.diag([-1.0, -1.0, 1.0])  # flips LPS to RAS and back


def _turned(pose: Pose, pitch_deg: float, roll_deg: float = 0.0, yaw_deg: float = 0.0) -> Pose:
    """The head turned through the isocentre: yawed, rolled, then pitched as a gantry tilt of
    `pitch_deg` turns the slice planes (the pose lives in scanner RAS)."""
    if pitch_deg == roll_deg == yaw_deg == 0.0:
        return pose
    # Roll: the left (x) turns up (z); yaw: the nose (-y) turns left, so x turns towards y.
    lps = about_left_right(pitch_deg) @ _plane_turn(0, 2, roll_deg) @ _plane_turn(0, 1, yaw_deg)
    turn = _LPS_RAS @ lps @ _LPS_RAS
    return Pose(turn @ pose.rotation, turn @ pose.translation, pose.scale, pose.warp)


class _Grid:
    """Template-voxel coordinates of the CT grid, sampled at about 1 mm in-plane and upsampled."""

    def __init__(
        self,
        anatomy: Anatomy,
        pose: Pose,
        matrix: int,
        fov: float,
        thickness: float,
        n_slices: int,
        index: np.ndarray,
        tilt: float = 0.0,
    ) -> None:
        self.anatomy = anatomy
        self.pose = pose
        self.matrix = matrix
        pixel = fov / matrix
        # The template is 1 mm; sampling it finer only interpolates, so sample at ~1 mm and zoom.
        self.factor = 2 if pixel < 0.7 else 1
        self.n = matrix // self.factor
        step = fov / self.n
        self.inplane = -fov / 2.0 + step / 2.0 + step * np.arange(self.n)
        self.cos_tilt, self.sin_tilt = math.cos(tilt), math.sin(tilt)
        # Slices lie `thickness` apart along their normal; a tilted gantry steps the table further.
        self.table_step = thickness / self.cos_tilt
        # Planes lie where the untilted ones do along their normal (at the isocentre).
        z0 = (-thickness * n_slices / 2.0 + thickness / 2.0 + _COVERAGE_OFFSET_MM) / self.cos_tilt
        self.index = index
        self.z = z0 + self.table_step * index
        self.thickness = thickness
        self.n_sub = max(1, round(thickness / 1.25))
        first = float(-fov / 2.0 + pixel / 2.0)
        self.origin_lps = (first, first * self.cos_tilt, float(z0) + first * self.sin_tilt)

    def _coords(self, z: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """(3, len(z), n, n) template voxel coordinates of slice planes through table position z
        (mm), each moved `depth` mm along its normal (within the slab)."""
        pose, a = self.pose, self.anatomy
        inv = (pose.rotation.T / pose.scale[:, None]).astype(np.float64)
        centre = a.center
        w = np.zeros_like(z) if depth is None else depth
        # Scanner RAS of a pixel: x = -LPS x (columns); down a column the plane runs along
        # LPS (0, cos t, sin t) for a gantry tilt t, and its normal is LPS (0, -sin t, cos t).
        # Untilted (cos 1, sin 0) this is exactly y = -LPS y (rows), z = table z + depth.
        sx = -self.inplane[None, None, :]
        down = self.inplane[None, :, None]
        sy = -down * self.cos_tilt + (w * self.sin_tilt)[:, None, None]
        sz = z[:, None, None] + down * self.sin_tilt + (w * self.cos_tilt)[:, None, None]
        out = np.empty((3, len(z), self.n, self.n), dtype=np.float32)
        d = [sx - pose.translation[0], sy - pose.translation[1], sz - pose.translation[2]]
        for i in range(3):
            out[i] = inv[i, 0] * d[0] + inv[i, 1] * d[1] + inv[i, 2] * d[2] + centre[i]
        for amp, wave, phase in pose.warp:
            arg = wave[0] * out[0] + wave[1] * out[1] + wave[2] * out[2] + phase
            s = np.sin(arg)
            for i in range(3):
                out[i] += amp[i] * s
        out -= a.origin[:, None, None, None].astype(np.float32)
        return out

    def _sub_planes(self) -> tuple[np.ndarray, np.ndarray]:
        """Table position and depth along the normal (mm) of the planes each slab is averaged over,
        (slices, n_sub) each."""
        offsets = (np.arange(self.n_sub) + 0.5) / self.n_sub - 0.5
        depth = np.broadcast_to(offsets[None, :] * self.thickness, (len(self.z), self.n_sub))
        return np.broadcast_to(self.z[:, None], depth.shape), depth

    def sample_slabs(self, *volumes: np.ndarray) -> list[np.ndarray]:
        """Mean over each slice's thickness, (slices, n, n) for each volume."""
        outs = [np.empty((len(self.z), self.n, self.n), dtype=np.float32) for _ in volumes]
        table, depth = self._sub_planes()
        for k in range(len(self.z)):
            c = self._coords(table[k], depth[k]).reshape(3, -1)
            for volume, out in zip(volumes, outs, strict=True):
                vals = ndimage.map_coordinates(volume, c, order=1, cval=-1000.0, prefilter=False)
                out[k] = vals.reshape(self.n_sub, self.n, self.n).mean(axis=0)
        return outs

    def sample_centre(self, volume: np.ndarray, cval: float) -> np.ndarray:
        c = self._coords(self.z)
        vals = ndimage.map_coordinates(volume, c.reshape(3, -1), order=1, cval=cval, prefilter=False)
        out: np.ndarray = vals.reshape(len(self.z), self.n, self.n)
        return out

    def sample_box_mean(self, fraction: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
        """Slab-mean of a box-local fraction; only points that fall in the box are interpolated."""
        table, depth = self._sub_planes()
        c = self._coords(table.reshape(-1), depth.reshape(-1)).reshape(3, -1)
        lo = np.array([s.start for s in box], dtype=np.float32)[:, None]
        hi = np.array([s.stop - 1 for s in box], dtype=np.float32)[:, None]
        inside = np.all((c >= lo) & (c <= hi), axis=0)
        vals = np.zeros(c.shape[1], dtype=np.float32)
        if inside.any():
            vals[inside] = ndimage.map_coordinates(fraction, c[:, inside] - lo, order=1, prefilter=False)
        mean: np.ndarray = vals.reshape(len(self.z), self.n_sub, self.n, self.n).mean(axis=1)
        return mean

    def upsample(self, image: np.ndarray) -> np.ndarray:
        if self.factor == 1:
            return image
        out: np.ndarray = ndimage.zoom(
            image, (1, self.factor, self.factor), order=1, grid_mode=True, mode="nearest"
        )
        return out


def _finish(image: np.ndarray, profile: VendorProfile, grid: _Grid) -> np.ndarray:
    """Upsample to the output matrix and apply the reconstruction kernel's blur.

    The profile's blur is a length (pixels of a PROFILE_MATRIX matrix): sampling the template
    at ~1 mm already blurs, and the Gaussian here, half the profile's sigma, is the same
    number of millimetres at every matrix.
    """
    image = grid.upsample(image)
    sigma = profile.kernel_blur_px / 2.0 * grid.matrix / PROFILE_MATRIX
    blurred: np.ndarray = ndimage.gaussian_filter(image, sigma=(0.0, sigma, sigma))
    return blurred


def _noise(
    rng: np.random.Generator, shape: tuple[int, int, int], profile: VendorProfile, thickness: float,
    cap_hu: float = NOISE_CAP_HU,
) -> np.ndarray:
    """Correlated Gaussian noise; thinner slices are noisier (std grows as 1/sqrt(thickness)).

    The grain is a length like the kernel blur: in pixels of a PROFILE_MATRIX matrix.
    """
    std = float(np.clip(rng.uniform(*profile.noise_hu) * math.sqrt(5.0 / thickness), 3.0, max(cap_hu, 3.0)))
    white = rng.standard_normal(shape, dtype=np.float32)
    grain = profile.noise_grain_px * shape[-1] / PROFILE_MATRIX
    coloured: np.ndarray = ndimage.gaussian_filter(white, sigma=(0.0, grain, grain))
    coloured *= std / max(float(coloured.std()), 1e-6)
    return coloured
