"""Anomaly-map triage for non-contrast head CT.

A feed-forward model turns every slice into a pseudo-healthy version of itself; where the
real slice differs from it inside the brain, something is there that healthy anatomy
does not explain. Blood is brighter than the brain it replaces and infarct or oedema a
little darker, so the two directions are scored separately:

A thin series noisier than the model's training (`slab_noise_hu`) is first averaged into
running slabs of its slices (`quietened`); each slice keeps its place, and the steps below
read the slabs.

0. with `mirror_average` (on by default), the pseudo-healthy slice is the mean of the model's
   output on the slice and on its left-right mirror image, flipped back: a healthy head is
   nearly symmetric, the model's errors on it are not. On 192 validation phantoms this
   lowered healthy heads' false evidence and raised the study AUC from 0.899 to 0.909
   (paired 95 % bootstrap interval +0.001 to +0.023; unseen scanner 0.915 to 0.920, -0.000
   to +0.014), for twice the inference;
1. signed difference d = HU − pseudo-healthy HU, both clipped to the model's HU window,
   inside the brain mask;
2. hyperdense excess = max(d smoothed by `smoothing_mm` − `noise_floor_hu`, 0): small,
   bright findings (blood) need fine detail and stand far above the noise; not counted
   where the next slice up or down (in a thin series, any slice within 3 mm) is bone at the
   same place, since the slice may hold a sliver of that bone (partial volume at the skull
   base) or soft tissue that bone encloses there, which no pseudo-healthy slice reproduces;
   on validation phantoms this removed most healthy heads' false evidence;
3. hypodense excess = max(−d smoothed by `hypodense_smoothing_mm` − `hypodense_floor_hu`, 0):
   infarct lowers the parenchyma by only 5–15 HU, visible over an area, not per pixel;
4. anomaly map = hyperdense + hypodense excess; slice score = its anomalous area in cm²;
5. raw study score = anomalous volume in ml, each voxel weighted by its excess in units of
   its floor and capped at 3 (certain findings weigh more than faint texture); a voxel's
   volume follows its slice's share of the coverage (`CtVolume.slice_extents`), so a gap
   where a slice may be missing is scored from its neighbours and reported as a warning;
6. study score (0-100) = 100 × (1 − exp(−raw / `calibration_ml`)): monotone, so ranking is
   unchanged, and calibrated on held-out healthy phantoms so that the configured
   thresholds (`urgent`, `critical`) separate the categories;
7. the midline shift (`midline.midline_shift`: the septum's offset from the skull's plane of
   symmetry) is warned of from 5 mm whatever the score; with `midline_shift_critical_mm` set, a
   study shifted that far is critical.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from io import BytesIO
from typing import Any, Protocol

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid
from scipy import ndimage

from dicomnode.compression import lossy_compression
from dicomnode.engines import Engine
from dicomnode.errors import ConfigError
from dicomnode.frames import frame_number
from dicomnode.generators.base import GeneratorOutput, TriageSummary
from dicomnode.generators.ct import (
    BONE_HU,
    CHUNK_SLICES,
    ENHANCED_HU,
    CtVolume,
    SeriesRejected,
    bone_beside,
    bone_beside_reach,
    brain_mask_and_open_rings,
    enhanced,
    from_model_grid,
    head_window,
    image_noise_hu,
    intracranial_metal,
    load_ct_volume,
    quieter_slabs,
    to_model_grid,
)
from dicomnode.generators.midline import WARN_SHIFT_MM, midline_shift
from dicomnode.generators.orientation import (
    LEARNT_ROLL_DEG,
    LEARNT_YAW_DEG,
    WARN_ROLL_DEG,
    WARN_YAW_DEG,
    head_turn,
)
from dicomnode.generators.patient import patient_age
from dicomnode.outputs import (
    AlgorithmInfo,
    SliceFinding,
    TriageFinding,
    heatmap_secondary_capture,
    triage_report,
)

log = logging.getLogger(__name__)

_LOSSY_REFERENCE_PIXEL_MM2 = 0.25  # max_lossy_ratio is for 0.5 mm pixels

CATEGORIES = ("critical", "urgent", "routine")


@dataclass(frozen=True)
class TriageSettings:
    model: str = "anomaly_triage"
    critical: float = 70.0
    urgent: float = 40.0
    noise_floor_hu: float = 5.0
    smoothing_mm: float = 1.5
    hypodense_floor_hu: float = 8.0  # chosen on validation phantoms (`evaluate --validation`)
    hypodense_smoothing_mm: float = 3.0
    # `dicomnode evaluate anomaly_triage --calibrate 120` (model 0.8.0), whose heads are rendered
    # at 512, the matrix scanners send: healthy heads carry more evidence there than at 256.
    calibration_ml: float = 0.244
    output_slices: str = "anomalous"  # all | anomalous
    slice_threshold_cm2: float = 0.1  # with output_slices: anomalous
    top_slices: int = 3
    mirror_average: bool = True  # step 0 of the module's docstring
    # Series noisier than this (`ct.image_noise_hu`) are refused. Training phantoms read up to
    # 10 HU (256 and 512, 1-5 mm); healthy phantom heads with noise added scored urgent or
    # critical from about 19 HU; a bleeding head given a bone kernel's sharpening and noise
    # read 35 HU and scored 0.
    max_noise_hu: float = 15.0
    # A thin series noisier than this is read as running slabs of its slices, at most 5 mm
    # (`quietened`), the thinnest that bring its noise to this. Just above the 10 HU training
    # phantoms reach: 64 validation phantoms at 0.625 mm with their full 9-19 HU of noise, read
    # slice by slice, put 5 of 32 healthy heads over the urgent line; read as slabs, 1.
    slab_noise_hu: float = 11.0
    # A series with more intracranial tissue than this (ml) at 130-300 HU away from bone, on
    # both sides alike (twice the lesser side's: `ct.enhanced`), is refused as contrast-enhanced:
    # a contrast study whose headers leave out the agent would otherwise score critical.
    max_enhanced_ml: float = 0.5
    # Above this (and up to max_enhanced_ml) the series is triaged with a warning: a
    # contrast-enhanced phantom of faint vessels (150 HU, 5 mm slices) read 0.49 ml.
    warn_enhanced_ml: float = 0.1
    # Patients younger than this (PatientAge, else the birth date) are refused: the model learnt
    # adult heads (MNI152 anatomy); a child's skull, brain and white matter differ. 0: every age.
    # A series that states no age is triaged.
    min_patient_age_years: float = 18.0
    # A study whose septum lies at least this far from the skull's midline (mm) is critical
    # whatever its score; 0: off, the shift is only warned of (from 5 mm). Phantom-tested only:
    # see the model card's "Subdural blood that pushes the brain".
    midline_shift_critical_mm: float = 0.0
    # A series compressed with loss harder than this (`compression.lossy_compression`: the recorded
    # ratio, else estimated from the compressed size) is refused; any lossy series is triaged with
    # a warning. The ratio is for 0.5 mm pixels (a 512 matrix); a coarser pixel holds more of the
    # head, so the node allows less in proportion to its area (`allowed_lossy_ratio`). See the
    # model card's "Lossy compressed series".
    max_lossy_ratio: float = 20.0

    @classmethod
    def from_params(cls, *layers: Mapping[str, Any]) -> TriageSettings:
        """Merge settings (later layers win) and validate them, naming the bad key."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                if key not in known:
                    raise ConfigError(f"anomaly_triage.{key}: unknown setting (known: {', '.join(known)})")
                default = known[key].default
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                if isinstance(default, float) and numeric:
                    value = float(value)
                if type(value) is not type(default):
                    expected = type(default).__name__
                    raise ConfigError(f"anomaly_triage.{key}: expected {expected}, got {value!r}")
                values[key] = value
        settings = cls(**values)
        if settings.output_slices not in ("all", "anomalous"):
            raise ConfigError("anomaly_triage.output_slices: expected all or anomalous")
        if not 0 <= settings.urgent <= settings.critical <= 100:
            raise ConfigError("anomaly_triage: need 0 <= urgent <= critical <= 100")
        if settings.calibration_ml <= 0 or settings.top_slices < 1:
            raise ConfigError("anomaly_triage: calibration_ml and top_slices must be positive")
        for key in ("noise_floor_hu", "hypodense_floor_hu", "smoothing_mm", "hypodense_smoothing_mm",
                    "max_noise_hu", "slab_noise_hu", "max_enhanced_ml", "warn_enhanced_ml"):
            if getattr(settings, key) <= 0:
                raise ConfigError(f"anomaly_triage.{key}: must be positive")
        for key in ("min_patient_age_years", "midline_shift_critical_mm"):
            if getattr(settings, key) < 0:
                raise ConfigError(f"anomaly_triage.{key}: must be 0 or more")
        if settings.max_lossy_ratio < 1:
            raise ConfigError("anomaly_triage.max_lossy_ratio: must be 1 or more (1 refuses every series "
                              "compressed with loss whose ratio is known)")
        return settings

    def score(self, raw_ml: float) -> float:
        """The calibrated study score 0-100 of a raw score (step 6)."""
        return float(100.0 * (1.0 - np.exp(-raw_ml / self.calibration_ml)))

    def category(self, score: float) -> str:
        if score >= self.critical:
            return "critical"
        if score >= self.urgent:
            return "urgent"
        return "routine"


@dataclass(frozen=True)
class TriageAnalysis:
    volume: CtVolume
    pseudo_healthy: np.ndarray  # HU, same shape as volume.hu
    difference: np.ndarray  # evidence in HU: max(fine d, coarse −d) inside the brain
    anomaly: np.ndarray  # hyperdense + hypodense excess HU, same shape
    slice_scores: np.ndarray  # cm² per slice
    raw_ml: float
    score: float
    category: str
    warnings: tuple[str, ...] = ()  # for the worklist: how the series was read (`read_series`)
    midline_shift_mm: float | None = None  # + to the patient's left (`midline.midline_shift`)

    def top_slices(self, count: int) -> list[int]:
        order = np.argsort(-self.slice_scores, kind="stable")
        return [int(i) for i in order[:count] if self.slice_scores[i] > 0]

    def region(self, index: int) -> tuple[int, int, int, int] | None:
        """(row0, col0, row1, col1) of the anomalous pixels of a slice, or None."""
        rows, cols = np.nonzero(self.anomaly[index] > 0)
        if rows.size == 0:
            return None
        return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def fit_calibration_ml(healthy_raw_ml: Sequence[float], settings: TriageSettings) -> float:
    """calibration_ml that puts the 95th percentile of these healthy studies at the urgent threshold.

    The inverse of step 6: score(r95) = urgent, so about 5 % of healthy studies reach urgent.
    """
    if not healthy_raw_ml:
        raise ValueError("no healthy studies to calibrate on")
    if not 0 < settings.urgent < 100:
        raise ValueError(f"urgent threshold {settings.urgent:g}: calibration needs 0 < urgent < 100")
    r95 = float(np.percentile(healthy_raw_ml, 95))
    return max(r95, 1e-3) / -float(np.log(1.0 - settings.urgent / 100.0))


def analyse(datasets: Sequence[Dataset], engine: Engine, settings: TriageSettings) -> TriageAnalysis:
    """The whole computation, from datasets to scores; no DICOM is written here."""
    if datasets:
        too_young = age_refusal(datasets[0], settings)
        if too_young is not None:
            raise SeriesRejected(too_young)
    volume = load_ct_volume(datasets)
    lossy_refused, lossy_warnings = lossy_reading(datasets, volume.pixel_spacing, settings)
    if lossy_refused is not None:
        raise SeriesRejected(lossy_refused)
    reading = read_series(volume, settings)
    if reading.refused is not None:
        raise SeriesRejected(reading.refused)
    analysis = analyse_volume(reading.volume, engine, settings)
    return replace(analysis, warnings=lossy_warnings + reading.warnings + analysis.warnings)


def allowed_lossy_ratio(pixel_spacing: tuple[float, float], settings: TriageSettings) -> float:
    """The hardest compression accepted for pixels this size: `max_lossy_ratio` for 0.5 mm ones,
    less for coarser ones in proportion to their area. What the compression leaves is about so
    many bits per square millimetre of the head: phantoms lost nothing at 40:1 in 512 slices nor
    at 10:1 in 256 ones (2 bits per mm² either way), and broke down at 100:1 and 20:1."""
    return settings.max_lossy_ratio * _LOSSY_REFERENCE_PIXEL_MM2 / (pixel_spacing[0] * pixel_spacing[1])


def lossy_reading(datasets: Sequence[Dataset], pixel_spacing: tuple[float, float],
                  settings: TriageSettings) -> tuple[str | None, tuple[str, ...]]:
    """Why a series compressed with loss is refused (None: it is not), and the worklist's warning.

    The model learnt lossless images. Lossy coding smooths the texture the model reads and, hard
    enough, leaves blocks and rings that it takes for findings (healthy phantom heads compressed
    100:1 scored urgent); `allowed_lossy_ratio` is the hardest the node accepts."""
    lossy = lossy_compression(datasets)
    if lossy is None:
        return None, ()
    allowed = allowed_lossy_ratio(pixel_spacing, settings)
    # Compared as shown (to the nearest whole ratio): an encoder aiming at 20:1 reaches 20.03.
    if lossy.ratio is not None and round(lossy.ratio) > round(allowed):
        return (f"{lossy.describe()}, above the {allowed:.0f}:1 that anomaly_triage.max_lossy_ratio "
                f"({settings.max_lossy_ratio:g}:1 for 0.5 mm pixels) allows for its "
                f"{pixel_spacing[0]:.2f} x {pixel_spacing[1]:.2f} mm pixels: its artefacts would score "
                "as findings; triage the original (lossless) series"), ()
    return None, (f"{lossy.describe()}: the model learnt lossless images, so small findings may be lost in "
                  "the compression",)


def age_refusal(ds: Dataset, settings: TriageSettings) -> str | None:
    """Why a patient is outside the model's intended use (too young), or None."""
    age = patient_age(ds)
    if age is None or age.years >= settings.min_patient_age_years:
        return None
    return (f"the patient is {age.text} old, under anomaly_triage.min_patient_age_years "
            f"({settings.min_patient_age_years:g}): the model learnt adult heads, and a child's skull, "
            "brain and white matter differ; set min_patient_age_years to triage younger patients")


@dataclass(frozen=True)
class SeriesReading:
    """How the model reads a series: the volume (thin noisy slices as running slabs), why it
    cannot (None where it can), and what the worklist should say about the reading."""

    volume: CtVolume
    refused: str | None
    warnings: tuple[str, ...] = ()


def read_series(volume: CtVolume, settings: TriageSettings) -> SeriesReading:
    """The series as the model should read it (`quietened`), refused where it cannot.

    Refused: a series with no brain found, one far noisier than training even after
    averaging, and one that looks contrast-enhanced. A bone-kernel reconstruction of a
    bleeding head otherwise scores routine (its brain mask is empty), a noisy healthy head
    scores urgent, and so does every contrast-enhanced head (its vessels read as blood).
    """
    metal_ml = intracranial_metal(volume)  # before slabs average it away
    volume, noise_hu = quietened(volume, settings)
    if noise_hu is None:
        return SeriesReading(volume, "no brain tissue (-15 to 120 HU inside the skull) in the middle of the "
                                     "series: not a head CT, or a sharp (bone) reconstruction kernel; triage "
                                     "the soft-tissue (brain) kernel series")
    if noise_hu > settings.max_noise_hu:
        averaged = f" in {volume.slab_mm:.1f} mm slabs" if volume.slab_mm else ""
        return SeriesReading(volume, f"image noise in the brain is {noise_hu:.0f} HU{averaged}, above "
                                     f"anomaly_triage.max_noise_hu ({settings.max_noise_hu:g} HU; training "
                                     "phantoms reach 10): a sharp (bone) reconstruction kernel? Triage the "
                                     "soft-tissue (brain) kernel series")
    found = enhanced(volume, near_metal(metal_ml, volume.slab_half))
    log.info("intracranial tissue at %g-%g HU away from bone: %.2f ml right, %.2f ml left",
             ENHANCED_HU, BONE_HU, found.right_ml, found.left_ml)
    measured = (f"{found.right_ml:.2f} ml (right) and {found.left_ml:.2f} ml (left) of intracranial "
                f"tissue at {ENHANCED_HU:g}-{BONE_HU:g} HU away from bone, where no blood reaches "
                f"without contrast; {found.bilateral_ml:.2f} ml on both sides alike")
    if found.bilateral_ml > settings.max_enhanced_ml:
        return SeriesReading(volume, f"looks contrast-enhanced: {measured}, above "
                                     f"anomaly_triage.max_enhanced_ml ({settings.max_enhanced_ml:g} ml). The "
                                     "model reads non-contrast head CT, where enhancing vessels would score "
                                     "as blood; triage the non-contrast series")
    warnings = _warnings(volume) + _metal_warning(volume, metal_ml)
    if found.bilateral_ml > settings.warn_enhanced_ml:
        warnings += (f"may be contrast-enhanced: {measured} (refused above "
                     f"{settings.max_enhanced_ml:g} ml); if it is, enhancing vessels scored as blood",)
    return SeriesReading(volume, None, warnings)


def quietened(volume: CtVolume, settings: TriageSettings) -> tuple[CtVolume, float | None]:
    """The volume and its image noise in the brain (None: no brain found). A thin series noisier
    than `slab_noise_hu` is read as running slabs (`ct.quieter_slabs`, at most 5 mm), the
    thinnest that bring it to `slab_noise_hu` where one does."""
    noise = image_noise_hu(volume.hu, volume.pixel_spacing)
    if noise is None:
        return volume, None
    log.info("image noise in the brain: %.1f HU", noise)
    if noise > settings.slab_noise_hu:
        choice = quieter_slabs(volume, settings.slab_noise_hu)
        if choice is not None:
            log.info("read as running %.1f mm slabs of its %.2f mm slices: image noise %.1f HU",
                     choice.volume.slab_mm, volume.slice_spacing, choice.noise_hu)
            return choice.volume, choice.noise_hu
    return volume, noise


def analyse_volume(volume: CtVolume, engine: Engine, settings: TriageSettings) -> TriageAnalysis:
    window = model_window(engine)
    return score_volume(volume, restore(volume, engine, settings.mirror_average), window, settings)


def model_window(engine: Engine) -> tuple[float, float]:
    """The HU range the model sees; the difference is taken between slices clipped to it."""
    low, high = engine.manifest.preprocessing.hu_window or (-1024.0, 3071.0)
    return float(low), float(high)


def restore(volume: CtVolume, engine: Engine, mirror_average: bool = False) -> np.ndarray:
    """The pseudo-healthy volume in HU (clipped to the model's window), on the volume's grid.

    With `mirror_average`, the mean of the model's output on the slices and on their
    left-right mirror images (flipped back), run as one batch. Slices stored turned (a prone or
    decubitus patient) are turned to the view the model was trained on and back. A field of view
    wider than the model's training (manifest `field_of_view_mm`) is cut to a window around the
    head; a narrower or rectangular one (or rectangular pixels) is padded with air to a square
    before it is resampled to the (square) model grid, so the anatomy keeps its scale and
    proportions, and cropped back after.
    """
    manifest = engine.manifest
    spec = manifest.inputs[0]
    grid = _model_grid(spec.shape, manifest)
    window = model_window(engine)
    turned = volume.turn.apply(volume.hu)
    spacing = volume.turn.spacing(volume.pixel_spacing)
    narrowest, widest = manifest.preprocessing.field_of_view_mm or (0.0, float("inf"))
    rows_kept, cols_kept = head_window(turned, spacing, widest)
    head = turned[:, rows_kept, cols_kept]
    width_mm = max(turned.shape[1] * spacing[0], turned.shape[2] * spacing[1])
    if width_mm > widest or width_mm < narrowest:
        log.info("field of view %.0f mm, outside the %.0f-%.0f mm the model was trained on: it sees %s",
                 width_mm, narrowest, widest, "a window around the skull" if width_mm > widest else
                 "the image padded with air")
    model_input = manifest.preprocessing.apply(to_model_grid(head, window, grid, spacing, narrowest))
    count = model_input.shape[0]
    batch = np.concatenate([model_input, model_input[:, :, ::-1]]) if mirror_average else model_input
    del model_input  # a thin series' intermediates add up: each is dropped once used
    outputs = engine.run(batch[:, None, :, :].astype(spec.numpy_dtype, copy=False))
    shape = batch.shape
    del batch
    restored = np.asarray(next(iter(outputs.values())), dtype=np.float32).reshape(shape)
    del outputs
    restored = np.clip(manifest.preprocessing.invert(restored), *window)
    if mirror_average:  # averaged on the model's grid: resampling is linear and mirror-symmetric
        restored = (restored[:count] + restored[count:, :, ::-1]) / 2.0
    pseudo = from_model_grid(restored, (head.shape[1], head.shape[2]), spacing, narrowest)
    if head.shape != turned.shape:  # outside the head's window the slices are their own twin
        whole = np.clip(turned, *window).astype(np.float32)
        whole[:, rows_kept, cols_kept] = pseudo
        pseudo = whole
    return np.ascontiguousarray(volume.turn.undo(pseudo))


def score_volume(volume: CtVolume, pseudo: np.ndarray, window: tuple[float, float],
                 settings: TriageSettings) -> TriageAnalysis:
    """Anomaly map, slice and study scores from a volume and its pseudo-healthy twin.

    Computed a few slices at a time (smoothing is in-plane; the bone rule reads the slices
    beside each one), so a thin series needs its two full-size maps and little more.
    """
    hu = volume.hu
    mask, open_rings = brain_mask_and_open_rings(hu, volume.pixel_spacing)
    # Everything outside the brain is zero: work inside its bounding box (plus the reach of
    # the wider Gaussian, so the result is exact), about half the pixels of the field of view.
    widest = max(settings.smoothing_mm, settings.hypodense_smoothing_mm)
    margin = [int(np.ceil(_TRUNCATE * widest / s)) + 1 for s in volume.pixel_spacing]
    _, rows, cols = _bounding_box(mask, margin)
    reach = bone_beside_reach(volume.slice_spacing, volume.slab_mm)
    anomaly = np.zeros(hu.shape, dtype=np.float32)
    evidence = np.zeros(hu.shape, dtype=np.float32)
    weight_per_slice = np.zeros(hu.shape[0], dtype=np.float32)
    for start in range(0, hu.shape[0], CHUNK_SLICES):
        part = slice(start, start + CHUNK_SLICES)
        inside = mask[part, rows, cols]
        signed = (np.clip(hu[part, rows, cols], *window) - pseudo[part, rows, cols]) * inside
        low = max(start - reach, 0)
        beside = bone_beside(hu[low:start + CHUNK_SLICES + reach, rows, cols], volume.slice_spacing,
                             volume.slab_mm)
        hyper_allowed = inside & ~beside[start - low:start - low + inside.shape[0]]
        fine = _smooth(signed, settings.smoothing_mm, volume.pixel_spacing) * hyper_allowed
        coarse = _smooth(signed, settings.hypodense_smoothing_mm, volume.pixel_spacing) * inside
        hyper = np.maximum(fine - settings.noise_floor_hu, 0.0)
        hypo = np.maximum(-coarse - settings.hypodense_floor_hu, 0.0)
        anomaly[part, rows, cols] = hyper + hypo
        evidence[part, rows, cols] = np.maximum(fine, -coarse)
        weight = (np.minimum(hyper / settings.noise_floor_hu, 3.0)
                  + np.minimum(hypo / settings.hypodense_floor_hu, 3.0))
        weight_per_slice[part] = weight.sum(axis=(1, 2))
    pixel_cm2 = volume.pixel_spacing[0] * volume.pixel_spacing[1] / 100.0
    slice_scores = (anomaly > 0).sum(axis=(1, 2)) * pixel_cm2
    raw_ml = float((weight_per_slice * volume.slice_voxel_ml()).sum())
    score = settings.score(raw_ml)
    shift = _midline_shift(volume, mask)
    shifted = (settings.midline_shift_critical_mm > 0 and shift is not None
               and abs(shift) >= settings.midline_shift_critical_mm)
    return TriageAnalysis(volume, pseudo, evidence, anomaly, slice_scores, raw_ml, score,
                          "critical" if shifted else settings.category(score),
                          _open_skull_warning(volume, open_rings) + _turned_head_warning(volume, mask)
                          + _midline_warning(shift), shift)


def near_metal(metal_ml: np.ndarray, slab_half: int = 0) -> np.ndarray:
    """Slices holding metal (`ct.intracranial_metal`), the next ones (a coil's edge reads below
    METAL_HU and still casts streaks) and those whose running slab reaches them."""
    reach = 1 + slab_half
    holding = np.flatnonzero(metal_ml > 0)
    near = np.zeros(metal_ml.shape, dtype=bool)
    for k in holding:
        near[max(k - reach, 0):k + reach + 1] = True
    return near


def _metal_warning(volume: CtVolume, metal_ml: np.ndarray) -> tuple[str, ...]:
    """What the reader should know where metal lies inside the skull (`ct.intracranial_metal`)."""
    slices = np.flatnonzero(metal_ml > 0)
    if not slices.size:
        return ()
    return (f"metal inside the skull (an aneurysm coil or clip, an electrode?) on {slices.size} slice(s) "
            f"{_where(volume, slices)}: its streaks may add evidence across those slices, or hide blood "
            "in them",)


def _where(volume: CtVolume, slices: Sequence[int] | np.ndarray) -> str:
    """Where these slices (in order) lie in the series, for the worklist."""
    if volume.positions:
        return (f"between {volume.positions[slices[0]]:.1f} and {volume.positions[slices[-1]]:.1f} mm "
                "along the series")
    return f"slices {slices[0] + 1} to {slices[-1] + 1}"


def _open_skull_warning(volume: CtVolume, slices: Sequence[int]) -> tuple[str, ...]:
    """What the reader should know where the skull's ring was open (`ct.brain_mask`)."""
    if not slices:
        return ()
    return (f"the skull is open on {len(slices)} slice(s) {_where(volume, slices)} (a burr hole, a "
            "craniotomy, or a field of view that cuts the head?): the brain there was masked up to the "
            "bone's outline, and the edge of the opening may add evidence",)


def _positions(volume: CtVolume) -> np.ndarray:
    return (np.asarray(volume.positions) if volume.positions
            else np.arange(volume.hu.shape[0]) * volume.slice_spacing)


def _midline_shift(volume: CtVolume, mask: np.ndarray) -> float | None:
    """The septum's offset from the skull's midline (mm, + to the patient's left), in the
    standard axial view whatever way the series was stored (`midline.midline_shift`)."""
    found = midline_shift(volume.turn.apply(volume.hu), volume.turn.apply(mask),
                          volume.turn.spacing(volume.pixel_spacing), _positions(volume))
    if found is None:
        return None
    log.info("septum %.1f mm to the patient's %s of the skull's midline (%d slices)", abs(found.shift_mm),
             "left" if found.shift_mm > 0 else "right", found.slices)
    return found.shift_mm


def _midline_warning(shift_mm: float | None) -> tuple[str, ...]:
    if shift_mm is None or abs(shift_mm) < WARN_SHIFT_MM:
        return ()
    towards, away = ("left", "right") if shift_mm > 0 else ("right", "left")
    return (f"midline shift: the septum pellucidum lies about {abs(shift_mm):.0f} mm to the patient's "
            f"{towards} of the skull's midline; something on the {away} may be pushing the brain, "
            "whatever its density",)


def _turned_head_warning(volume: CtVolume, mask: np.ndarray) -> tuple[str, ...]:
    """What the reader should know where the head lies rolled or turned further than the
    model learnt (`orientation.head_turn`)."""
    turn = head_turn(volume.turn.apply(volume.hu), volume.turn.apply(mask),
                     volume.turn.spacing(volume.pixel_spacing), _positions(volume))
    if turn is None:
        return ()
    log.info("head rolled %.0f and turned %.0f degrees in the slices", turn.roll_deg, turn.yaw_deg)
    parts = ([f"rolled about {abs(turn.roll_deg):.0f} degrees towards a shoulder"]
             if abs(turn.roll_deg) >= WARN_ROLL_DEG else [])
    parts += ([f"turned about {abs(turn.yaw_deg):.0f} degrees to a side"]
              if abs(turn.yaw_deg) >= WARN_YAW_DEG else [])
    if not parts:
        return ()
    return (f"the head lies {' and '.join(parts)} in the slices, further than the model learnt "
            f"({LEARNT_ROLL_DEG:g} and {LEARNT_YAW_DEG:g} degrees): the two sides are cut at different "
            "heights, and healthy structures may add evidence",)


_TRUNCATE = 4.0  # Gaussian kernels reach this many sigmas


def _smooth(image: np.ndarray, sigma_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """In-plane Gaussian smoothing (slices stay independent: thickness varies 1-5 mm)."""
    sigma_px = (0.0, sigma_mm / pixel_spacing[0], sigma_mm / pixel_spacing[1])
    return np.asarray(ndimage.gaussian_filter(image, sigma=sigma_px, truncate=_TRUNCATE), dtype=np.float32)


def _bounding_box(mask: np.ndarray, margin: list[int]) -> tuple[slice, slice, slice]:
    """All slices, and the rows and columns where `mask` is set, widened by `margin` pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    if rows.size == 0:
        return slice(None), slice(0, 0), slice(0, 0)
    r0, r1 = max(int(rows[0]) - margin[0], 0), min(int(rows[-1]) + margin[0] + 1, mask.shape[1])
    c0, c1 = max(int(cols[0]) - margin[1], 0), min(int(cols[-1]) + margin[1] + 1, mask.shape[2])
    return slice(None), slice(r0, r1), slice(c0, c1)


def _model_grid(shape: Sequence[int | str], manifest: Any) -> tuple[int, int]:
    """The model's fixed rows/columns, or the optimal ones for dynamic dimensions."""
    dims = []
    for dim in shape[-2:]:
        dims.append(dim if isinstance(dim, int) else manifest.dim_range(dim).opt)
    return int(dims[0]), int(dims[1])


class AnomalyTriage:
    """The `anomaly_triage` generator: heat-map Secondary Captures and a TID 1500 report."""

    name = "anomaly_triage"

    def __init__(self, engines: EngineSource, defaults: Mapping[str, Any]) -> None:
        self._engines = engines
        self._defaults = dict(defaults)
        TriageSettings.from_params(self._defaults)  # refuse bad configuration at start-up

    def run(self, datasets: Sequence[Dataset], params: Mapping[str, Any]) -> GeneratorOutput:
        settings = TriageSettings.from_params(self._defaults, params)
        engine = self._engines.get(settings.model)
        analysis = analyse(datasets, engine, settings)
        algorithm = AlgorithmInfo(
            name=engine.manifest.name,
            version=engine.manifest.version,
            parameters={"noise_floor_hu": f"{settings.noise_floor_hu:g}",
                        "hypodense_floor_hu": f"{settings.hypodense_floor_hu:g}",
                        "calibration_ml": f"{settings.calibration_ml:g}",
                        "mirror_average": "on" if settings.mirror_average else "off",
                        **({"slab_mm": f"{analysis.volume.slab_mm:.2f}"} if analysis.volume.slab_mm else {})},
        )
        sources = analysis.volume.datasets
        series_number = _result_series_number(sources[0])
        heatmap_series = generate_uid()
        wanted = range(len(sources)) if settings.output_slices == "all" else [
            i for i, s in enumerate(analysis.slice_scores) if s >= settings.slice_threshold_cm2]
        top = analysis.top_slices(settings.top_slices)
        # The most anomalous slice (or, with no finding, the middle one) is always shown.
        shown = top[0] if top else len(sources) // 2
        heatmaps: dict[int, Dataset] = {}
        for number, index in enumerate(sorted(set(wanted) | {shown}), start=1):
            heatmaps[index] = heatmap_secondary_capture(
                sources[index], analysis.anomaly[index], series_uid=heatmap_series,
                series_number=series_number, instance_number=number, algorithm=algorithm,
                slice_score=float(analysis.slice_scores[index]), body_part="HEAD")
        finding = TriageFinding(
            score=analysis.score,
            category=analysis.category,
            top_slices=[SliceFinding(sources[i], float(analysis.slice_scores[i]), analysis.region(i))
                        for i in top],
            slice_possibly_missing=bool(analysis.volume.suspected_gaps),
            midline_shift_mm=analysis.midline_shift_mm,
        )
        report = triage_report(sources, finding, series_uid=generate_uid(),
                               series_number=series_number + 1, algorithm=algorithm)
        objects = [*heatmaps.values(), report]
        most = top[0] if top else None
        log.info("anomaly triage: score %.1f (%s), raw %.2f ml, %d slice(s) with findings",
                 analysis.score, analysis.category, analysis.raw_ml, int((analysis.slice_scores > 0).sum()))
        return GeneratorOutput(objects, TriageSummary(
            score=analysis.score,
            category=analysis.category,
            top_slice_sop_uid=str(sources[most].SOPInstanceUID) if most is not None else None,
            top_slice_index=most,
            top_slice_frame_number=frame_number(sources[most]) if most is not None else None,
            thumbnail_png=_thumbnail(heatmaps[shown]),
            warnings=analysis.warnings,
            details={"raw_ml": analysis.raw_ml, "model": algorithm.name, "version": algorithm.version,
                     **({"slab_mm": analysis.volume.slab_mm} if analysis.volume.slab_mm else {}),
                     **({"midline_shift_mm": round(analysis.midline_shift_mm, 1)}
                        if analysis.midline_shift_mm is not None else {})},
        ))


def _warnings(volume: CtVolume) -> tuple[str, ...]:
    """What the reader of the worklist should know about how the series was read."""
    found = [f"a slice may be missing between {start:.1f} and {end:.1f} mm along the series; its "
             "neighbours were scored across the gap" for start, end in volume.suspected_gaps]
    if volume.slab_mm:
        found.append(f"thin, noisy slices: scored as running {volume.slab_mm:.1f} mm slabs, so each "
                     "slice's heat map shows the slab around it")
    return tuple(found)


class EngineSource(Protocol):
    def get(self, name: str) -> Engine: ...


def _result_series_number(source: Dataset) -> int:
    """Result series numbers follow the source's, in a range scanners leave free."""
    try:
        return 9000 + int(source.get("SeriesNumber") or 0) % 900
    except (TypeError, ValueError):
        return 9000


def _thumbnail(sc: Dataset, size: int = 256) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.asarray(sc.pixel_array, dtype=np.uint8))
    image.thumbnail((size, size))
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
