"""`dicomnode evaluate anomaly_triage`: the triage pipeline on held-out phantoms.

Studies are generated from seeds the training never uses (training draws from seeds below
`HELD_OUT_SEED`), half healthy and the other half cycling through every lesion kind and
size. Study level: ROC AUC and sensitivity at 90 % / 95 % specificity, overall, per lesion
kind and per size. Pixel level: AUPRC of the smoothed difference map against the lesion
masks (inside the brain), and the Dice of the map thresholded at the one threshold that
maximises the mean Dice over lesion studies. Every study is written as its scanner's DICOM
series and read back, so the HU conversion the node does is part of what is measured.

Each subset is also scored as a flawless generator would score it: every lesion study
against the study's exact lesion-free twin (same head, pose and noise) instead of the
model's output, the healthy heads keeping the model's scores. Where the model falls short
of that, it restores the lesions worse than it could; it can also land above it, since its
own errors elsewhere in a lesion study's head add to that study's score. A second figure
leaves the healthy heads perfect too (a flawless generator returns a healthy head unchanged,
which scores 0): the most this score can reach, whatever the generator; lesions that still
score 0 there are ones it cannot see at all (brain mask, floors, bone rule).

Shifted conditions show how far results move away from the reference mix: the thinnest and
thickest slices of the training mix (1 and 5 mm), and what training never saw (2 mm slices,
a scanner profile with a smoother reconstruction and other tags, 8 HU more noise, 0.625 mm
slices with the full 8-20 HU of noise that training caps at 10, a prone patient's slices,
stored face down, a 360 mm field of view where training drew 220-270, a gantry tilted by 20
degrees along with the head, whose sheared slices move the head from slice to slice but cut
it as before, a head pitched 20 degrees either way beyond the ±12 degrees training drew,
which cuts it differently, a head rolled towards a shoulder or turned to a side by 20 degrees
beyond the ±5 and ±8 degrees training drew, as a restless patient lies, an aneurysm coil, and
contrast). Three more hold a subdural haematoma in every lesion study, in 5 mm slices: fresh
as in training, then days old (isodense) and weeks old (hypodense); three more the same
collections pushing the brain towards the other side, which training's never did. Every
series is read as the node reads it (a thin, noisy one as running slabs). Each re-scans the
reference set's first studies (same seeds: the same heads, poses and lesions under the shifted
scan), so the change is paired and comes with a bootstrap interval.
All of this is phantom evidence, not clinical evidence.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from tqdm import tqdm

from dicomnode import metrics
from dicomnode.config import Config
from dicomnode.engines import Engine, EngineRegistry
from dicomnode.generators.anomaly_triage import (
    TriageSettings,
    analyse_volume,
    fit_calibration_ml,
    lossy_reading,
    model_window,
    read_series,
    score_volume,
)
from dicomnode.generators.ct import CtVolume, load_ct_volume, same_slabs
from dicomnode.generators.midline import WARN_SHIFT_MM
from dicomnode.phantoms.lesions import SUBDURAL_AGES, describe_subdural_age
from dicomnode.phantoms.volume import FULL_NOISE_CAP_HU, NOISE_CAP_HU

if TYPE_CHECKING:
    from dicomnode.phantoms import PhantomStudy

log = logging.getLogger(__name__)

HELD_OUT_SEED = 1_000_000
CALIBRATION_SEED = 2_000_000
# Calibration heads are rendered at the matrix scanners send: a model leaves a 512 healthy head
# more small evidence than a 256 one, so a fit at 256 puts too many real series over the line.
CALIBRATION_MATRIX = 512
# For choosing settings and comparing candidate models, so the held-out set stays unseen.
VALIDATION_SEED = 3_000_000
_DICE_THRESHOLDS = np.arange(2.0, 60.0, 2.0)
_PIXELS_PER_STUDY = 20_000


@dataclass(frozen=True)
class Condition:
    name: str
    slice_thickness_mm: float | None = None
    vendor: str | None = None
    extra_noise_hu: float = 0.0
    # PatientPosition the series is stored for; head first, so slices keep their order.
    patient_position: str = "HFS"
    field_of_view_mm: float | None = None  # None: drawn per study, as in training
    gantry_tilt_deg: float = 0.0
    head_pitch_deg: float = 0.0  # added to the drawn pose (training drew ±12°)
    head_roll_deg: float = 0.0  # likewise (±5°)
    head_yaw_deg: float = 0.0  # likewise (±8°)
    noise_cap_hu: float = NOISE_CAP_HU  # the most noise thin slices gain (`make_pair`)
    contrast_hu: float | None = None  # contrast-enhanced, vessel blood at this density
    metal: bool = False  # an aneurysm coil and its streaks
    lesion_as: str | None = None  # every lesion study holds this kind (its drawn size) instead
    subdural_age: str = "acute"  # phantoms.lesions.SUBDURAL_AGES
    mass_effect: bool = False  # subdural and epidural collections push the brain (`make_pair`)
    lossy_ratio: float | None = None  # stored JPEG 2000 compressed with loss at about this ratio

    def __post_init__(self) -> None:
        if not self.patient_position.startswith("HF"):
            raise ValueError(f"{self.name}: patient position {self.patient_position} is not head first")


@dataclass
class StudyResult:
    lesion: str | None
    size: str | None
    score: float
    raw_ml: float
    # raw_ml against the exact lesion-free twin (a flawless generator); 0 for healthy heads
    flawless_raw_ml: float = 0.0
    midline_shift_mm: float | None = None  # as the node measured it (`midline.midline_shift`)


@dataclass
class ConditionResult:
    condition: Condition
    studies: list[StudyResult] = field(default_factory=list)
    pixel_labels: list[np.ndarray] = field(default_factory=list)
    pixel_scores: list[np.ndarray] = field(default_factory=list)
    dice_sums: np.ndarray = field(default_factory=lambda: np.zeros(_DICE_THRESHOLDS.size))
    lesion_studies: int = 0
    # Series the node would refuse (`read_series`: no brain found, too noisy, contrast;
    # `lossy_reading`: compressed with loss too hard); scored
    # anyway, so that conditions stay paired study by study.
    refused: int = 0

    def labels(self, keep: Callable[[StudyResult], bool] = lambda s: True) -> tuple[np.ndarray, np.ndarray]:
        chosen = [s for s in self.studies if s.lesion is None or keep(s)]
        return (np.array([s.lesion is not None for s in chosen]), np.array([s.score for s in chosen]))

    def flawless_scores(self, keep: Callable[[StudyResult], bool] = lambda s: True,
                        healthy_perfect: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Labels and raw scores with every lesion study scored against its lesion-free twin.

        Healthy heads keep the model's raw score, or 0 with `healthy_perfect`. Raw scores rank
        as the calibrated ones do (the calibration is monotone).
        """
        chosen = [s for s in self.studies if s.lesion is None or keep(s)]
        scores = [s.flawless_raw_ml if s.lesion is not None else (0.0 if healthy_perfect else s.raw_ml)
                  for s in chosen]
        return np.array([s.lesion is not None for s in chosen]), np.array(scores)


def study_plan(count: int, seed0: int, kinds: tuple[str, ...], sizes: tuple[str, ...]) -> Iterator[
        tuple[int, str | None, str | None]]:
    """(seed, lesion kind, size): half healthy, the rest cycling through every kind and size.

    Kinds cycle fastest and each round of kinds shifts the sizes by one, so every prefix of
    the plan is mixed: each round holds every kind with sizes in turn, and every
    len(sizes) rounds hold each (kind, size) pair once. Shifted conditions reuse the first
    studies of the plan, so they must be as mixed as the whole set.
    """
    for i in range(count):
        if i % 2 == 0:
            yield seed0 + i, None, None
        else:
            cycle, k = divmod(i // 2, len(kinds))
            yield seed0 + i, kinds[k], sizes[(k + cycle) % len(sizes)]


def evaluate(engine: Engine, settings: TriageSettings, condition: Condition, count: int, seed0: int,
             matrix: int, progress: bool = True, render_workers: int = 0) -> ConditionResult:
    from dicomnode.phantoms import LESION_KINDS, SIZE_CLASSES
    from dicomnode.phantoms.dicom_writer import as_stored

    result = ConditionResult(condition)
    plan = list(study_plan(count, seed0, LESION_KINDS, SIZE_CLASSES))
    rng = np.random.default_rng(seed0)
    window = model_window(engine)
    if condition.lesion_as is not None:
        plan = [(seed, lesion and condition.lesion_as, size) for seed, lesion, size in plan]
    jobs = [{"seed": seed, "lesion": lesion, "slice_thickness_mm": condition.slice_thickness_mm,
             "matrix": matrix, "lesion_size": size, "vendor": condition.vendor,
             "field_of_view_mm": condition.field_of_view_mm, "gantry_tilt_deg": condition.gantry_tilt_deg,
             "head_pitch_deg": condition.head_pitch_deg, "head_roll_deg": condition.head_roll_deg,
             "head_yaw_deg": condition.head_yaw_deg, "healthy_twin": lesion is not None,
             "noise_cap_hu": condition.noise_cap_hu, "contrast_hu": condition.contrast_hu,
             "metal": condition.metal, "subdural_age": condition.subdural_age,
             "mass_effect": condition.mass_effect}
            for seed, lesion, size in plan]
    rendered = tqdm(zip(plan, _phantoms(jobs, render_workers), strict=True), total=len(plan),
                    desc=condition.name, disable=not progress, leave=False)
    for (_, lesion, size), (study, twin) in rendered:
        if condition.extra_noise_hu:
            noise = rng.normal(0.0, condition.extra_noise_hu, study.hu.shape)
            study = replace(study, hu=_add_noise(study.hu, noise))
            twin = None if twin is None else _add_noise(twin, noise)
        # As the node reads the series: thin noisy slices as running slabs.
        stored = _through_dicom(study, condition.patient_position, condition.lossy_ratio)
        reading = read_series(stored, settings)
        lossy_refused = lossy_reading(stored.datasets, stored.pixel_spacing, settings)[0]
        result.refused += reading.refused is not None or lossy_refused is not None
        volume = reading.volume
        analysis = analyse_volume(volume, engine, settings)
        if twin is None:
            result.studies.append(StudyResult(lesion, size, analysis.score, analysis.raw_ml,
                                              midline_shift_mm=analysis.midline_shift_mm))
            continue
        twin = same_slabs(volume, as_stored(condition.patient_position, twin))
        flawless = score_volume(volume, np.clip(twin, *window).astype(np.float32), window, settings)
        result.studies.append(StudyResult(lesion, size, analysis.score, analysis.raw_ml, flawless.raw_ml,
                                          analysis.midline_shift_mm))
        # The masks as the series is stored (the difference map is on the stored pixels).
        inside = as_stored(condition.patient_position, study.brain_mask)
        truth = as_stored(condition.patient_position, study.lesion_mask) & inside
        scores = analysis.difference[inside]
        labels = truth[inside]
        keep = labels | (rng.random(labels.size) < _PIXELS_PER_STUDY / max(labels.size, 1))
        result.pixel_labels.append(labels[keep])
        result.pixel_scores.append(scores[keep])
        result.dice_sums += [metrics.dice((analysis.difference > t) & inside, truth)
                             for t in _DICE_THRESHOLDS]
        result.lesion_studies += 1
    return result


def _add_noise(hu: np.ndarray, noise: np.ndarray) -> np.ndarray:
    noisy: np.ndarray = np.clip(np.rint(hu + noise), -32768, 32767).astype(np.int16)
    return noisy


def _through_dicom(study: PhantomStudy, position: str = "HFS", lossy_ratio: float | None = None) -> CtVolume:
    """The study as the node gets it: written as the vendor's DICOM series and read back."""
    from dicomnode.phantoms import write_series

    with tempfile.TemporaryDirectory(prefix="dicomnode-evaluate-") as folder:
        paths = write_series(study, Path(folder), position=position, lossy_ratio=lossy_ratio)
        datasets = [pydicom.dcmread(path) for path in paths]
    volume = load_ct_volume(datasets)
    if volume.hu.shape != study.hu.shape:
        raise RuntimeError(f"phantom seed {study.seed}: read back {volume.hu.shape}, wrote {study.hu.shape}")
    return volume


def calibrate(engine: Engine, settings: TriageSettings, count: int, matrix: int,
              render_workers: int = 0) -> float:
    """calibration_ml that puts the 95th percentile of healthy studies at the urgent threshold."""
    jobs = [{"seed": CALIBRATION_SEED + i, "lesion": None, "matrix": matrix, "healthy_twin": False}
            for i in range(count)]
    raws = []
    for study, _ in tqdm(_phantoms(jobs, render_workers), total=count, desc="calibration", leave=False):
        raws.append(analyse_volume(_through_dicom(study), engine, settings).raw_ml)
    return fit_calibration_ml(raws, settings)


def _phantoms(jobs: list[dict[str, Any]], workers: int) -> Iterator[tuple[PhantomStudy, np.ndarray | None]]:
    """`make_pair(**job)` for each job, in order; with workers, rendered ahead in other processes
    while this one runs the model (a phantom depends on its seed only: the same studies)."""
    from dicomnode.phantoms import make_pair
    from dicomnode.phantoms.ahead import rendered_ahead

    if workers <= 0:
        for job in jobs:
            yield make_pair(**job)
        return
    yield from rendered_ahead(make_pair, jobs, workers)


def summary_rows(result: ConditionResult) -> list[tuple[str, str]]:
    """(label, formatted metrics) rows for one condition."""
    from dicomnode.phantoms import LESION_KINDS, SIZE_CLASSES

    def study_metrics(keep: Callable[[StudyResult], bool]) -> str:
        y, s = result.labels(keep)
        n = int(y.sum())
        sens90 = metrics.sensitivity_at_specificity(y, s, 0.9)
        sens95 = metrics.sensitivity_at_specificity(y, s, 0.95)
        flawless = metrics.roc_auc(*result.flawless_scores(keep))
        low, high = metrics.auc_interval(y, s)
        return (f"AUC {metrics.roc_auc(y, s):.3f} ({low:.2f}-{high:.2f}) · sens@90%spec {sens90:.2f}"
                f" · sens@95%spec {sens95:.2f} · flawless generator {flawless:.3f} (n={n})")

    rows = [("all lesions", study_metrics(lambda s: True))]
    rows += [(f"kind {k}", study_metrics(lambda s, k=k: s.lesion == k)) for k in LESION_KINDS]  # type: ignore[misc]
    rows += [(f"size {z}", study_metrics(lambda s, z=z: s.size == z)) for z in SIZE_CLASSES]  # type: ignore[misc]
    rows.append(("midline shift", _midline_summary(result)))
    if result.pixel_labels:
        auprc = metrics.average_precision(np.concatenate(result.pixel_labels),
                                          np.concatenate(result.pixel_scores))
        mean_dice = result.dice_sums / max(result.lesion_studies, 1)
        best = int(np.argmax(mean_dice))
        rows.append(("pixels", f"AUPRC {auprc:.3f} · mean Dice {mean_dice[best]:.3f} at "
                               f"{_DICE_THRESHOLDS[best]:g} HU"))
    return rows


def _midline_summary(result: ConditionResult) -> str:
    """How many studies the node warns of a midline shift, and the ranking were they put first."""
    def shifted(study: StudyResult) -> bool:
        return study.midline_shift_mm is not None and abs(study.midline_shift_mm) >= WARN_SHIFT_MM

    healthy = [s for s in result.studies if s.lesion is None]
    lesions = [s for s in result.studies if s.lesion is not None]
    measured = [abs(s.midline_shift_mm) for s in healthy if s.midline_shift_mm is not None]
    y, _ = result.labels()
    first = np.array([max(s.score, 100.0 + abs(s.midline_shift_mm or 0.0)) if shifted(s) else s.score
                      for s in result.studies])
    return (f"{WARN_SHIFT_MM:g} mm or more: {sum(map(shifted, lesions))} of {len(lesions)} lesion studies, "
            f"{sum(map(shifted, healthy))} of {len(healthy)} healthy heads (largest "
            f"{max(measured, default=0.0):.1f} mm; not measured on {len(healthy) - len(measured)}) · "
            f"AUC {metrics.roc_auc(y, first):.3f} were those ranked first")


def conditions(unseen_vendors: list[str]) -> list[Condition]:
    """The reference mix, then the thinnest and thickest trained slices and what training never saw."""
    return [
        Condition("reference (mixed thickness and vendors)"),
        Condition("1 mm slices", slice_thickness_mm=1.0),
        Condition("5 mm slices", slice_thickness_mm=5.0),
        Condition("2 mm slices (not in training)", slice_thickness_mm=2.0),
        *[Condition(f"vendor {v} (not in training)", vendor=v) for v in unseen_vendors],
        Condition("noise +8 HU (not in training)", extra_noise_hu=8.0),
        Condition("0.625 mm slices with their full noise, 8-20 HU (not in training)",
                  slice_thickness_mm=0.625, noise_cap_hu=FULL_NOISE_CAP_HU),
        Condition("prone patient (not in training)", patient_position="HFP"),
        Condition("field of view 360 mm (not in training)", field_of_view_mm=360.0),
        Condition("gantry tilted 20 degrees with the head (not in training)", gantry_tilt_deg=20.0,
                  head_pitch_deg=20.0),
        Condition("head pitched +20 degrees (not in training)", head_pitch_deg=20.0),
        Condition("head pitched -20 degrees (not in training)", head_pitch_deg=-20.0),
        Condition("head rolled 20 degrees (not in training)", head_roll_deg=20.0),
        Condition("head turned 20 degrees (not in training)", head_yaw_deg=20.0),
        Condition("an aneurysm coil and its streaks (not in training)", metal=True),
        # As an archive that compresses to save space sends them. The node refuses harder than
        # max_lossy_ratio (20:1) for 0.5 mm pixels, less for coarser ones (5-7:1 at 256).
        *[Condition(f"JPEG 2000 compressed with loss at {ratio:g}:1 (not in training)", lossy_ratio=ratio)
          for ratio in (5.0, 10.0, 20.0)],
        # Every lesion study a subdural of one age, in 5 mm slices as emergency heads are read.
        *[Condition(f"subdural haematomas only, 5 mm slices, {describe_subdural_age(age)}",
                    slice_thickness_mm=5.0, lesion_as="sdh", subdural_age=age) for age in SUBDURAL_AGES],
        # The same collections pushing the brain across the midline, as large ones do in life.
        *[Condition(f"subdural haematomas pushing the brain (not in training), 5 mm slices, "
                    f"{describe_subdural_age(age)}", slice_thickness_mm=5.0, lesion_as="sdh",
                    subdural_age=age, mass_effect=True) for age in SUBDURAL_AGES],
        # The node refuses these (`read_series`); scored anyway, they show what the check prevents.
        Condition("contrast-enhanced, vessels 150 HU, agent not recorded (not in training)",
                  contrast_hu=150.0),
    ]


def shifted_conditions(shifted: list[Condition], only: str | None) -> list[Condition]:
    """The shifted conditions whose name holds `only` (any case), or all of them without it."""
    if only is None:
        return shifted
    chosen = [condition for condition in shifted if only.lower() in condition.name.lower()]
    if not chosen:
        names = "; ".join(condition.name for condition in shifted)
        raise ValueError(f"--only {only!r} names no shifted condition (they are: {names})")
    return chosen


def render(results: list[ConditionResult], settings: TriageSettings, engine: Engine, matrix: int) -> str:
    lines = [f"Model {engine.manifest.name} {engine.manifest.version} on {engine.backend_name}; phantoms "
             f"{matrix}×{matrix}; calibration_ml {settings.calibration_ml:g}, noise_floor_hu "
             f"{settings.noise_floor_hu:g}, hypodense_floor_hu {settings.hypodense_floor_hu:g}, "
             f"mirror_average {'on' if settings.mirror_average else 'off'}. "
             "Phantom results, not clinical evidence.", ""]
    reference = results[0]
    for result in results:
        y, s = result.labels()
        auc = metrics.roc_auc(y, s)
        drop = "" if result is reference else f" ({_paired_change(reference, result)})"
        lines.append(f"### {result.condition.name}: {len(result.studies)} studies, study AUC {auc:.3f}{drop}")
        lines.append("")
        if result.refused:
            lines += [f"{result.refused} of these series the node refuses (no brain found, noise above "
                      f"max_noise_hu {settings.max_noise_hu:g} HU, contrast-enhanced, or compressed with "
                      f"loss beyond max_lossy_ratio {settings.max_lossy_ratio:g}:1 scaled to its pixels); "
                      "scored here anyway.", ""]
        lines.append(_flawless_sentence(result))
        lines.append("")
        rows = summary_rows(result)
        if result is not reference:  # a few lesions of each kind: only the totals and sizes
            rows = [row for row in rows
                    if row[0] in ("all lesions", "midline shift") or row[0].startswith("size ")]
        lines += ["| subset | result |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows] + [""]
    return "\n".join(lines)


def _flawless_sentence(result: ConditionResult) -> str:
    """What a flawless generator would reach: with these healthy heads, and with perfect ones."""
    with_model_healthy = metrics.roc_auc(*result.flawless_scores())
    labels, perfect = result.flawless_scores(healthy_perfect=True)
    unseen = int(np.sum(labels & (perfect <= 0.0)))
    return (f"Flawless generator (each lesion study scored against its exact lesion-free twin): study "
            f"AUC {with_model_healthy:.3f} against this model's healthy heads; "
            f"{metrics.roc_auc(labels, perfect):.3f} with the healthy heads flawless too (score 0), the most "
            f"this score can reach; {unseen} of {int(labels.sum())} lesions leave no evidence even then.")


def _paired_change(reference: ConditionResult, shifted: ConditionResult) -> str:
    """The shifted condition against the reference on the same seeds (its first studies)."""
    n = len(shifted.studies)
    same = reference.studies[:n]
    labels = np.array([s.lesion is not None for s in same])
    change, low, high = metrics.paired_auc_change(labels, np.array([s.score for s in same]),
                                                  np.array([s.score for s in shifted.studies]))
    before = metrics.roc_auc(labels, np.array([s.score for s in same]))
    return (f"reference on the same {n} heads and lesions {before:.3f}; "
            f"change {change:+.3f}, 95 % bootstrap interval {low:+.3f} to {high:+.3f}")


# The generated tables sit between these lines, so a rerun keeps the commentary written around them.
GENERATED_BEGIN = "<!-- generated by `dicomnode evaluate --write-card`, rewritten on every run -->"
GENERATED_END = "<!-- end of the generated tables -->"


def write_into_card(card: Path, text: str) -> None:
    """Replace the card's generated tables, or, in a card without them yet, the body of its
    Evaluation section (between its heading and the next `## `)."""
    content = card.read_text(encoding="utf-8")
    block = f"{GENERATED_BEGIN}\n\n{text}\n\n{GENERATED_END}"
    start = content.find(GENERATED_BEGIN)
    end = content.find(GENERATED_END, start)
    if start >= 0 and end >= 0:
        updated = content[:start] + block + content[end + len(GENERATED_END):]
    else:
        pattern = re.compile(r"(^## Evaluation[^\n]*\n)(.*?)(?=^## |\Z)", re.S | re.M)
        if not pattern.search(content):
            content = content.rstrip() + "\n\n## Evaluation\n\n"
        updated = pattern.sub(lambda m: m.group(1) + "\n" + block + "\n\n", content, count=1)
    card.write_text(updated, encoding="utf-8")


def cmd_evaluate(config: Config, model: str, studies: int, shifted: int, matrix: int,
                 calibration: int, write_card: bool, validation: bool = False,
                 render_workers: int = 1, calibration_matrix: int = CALIBRATION_MATRIX,
                 only: str | None = None) -> int:
    from dicomnode.phantoms import UNSEEN_VENDORS

    if validation and write_card:
        print("error: --validation results do not go into the card (it reports the held-out set)")
        return 2
    if only is not None and write_card:
        print("error: --only results do not go into the card (its tables hold every condition)")
        return 2
    reference, *others = conditions(sorted(UNSEEN_VENDORS))
    try:
        others = shifted_conditions(others, only)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    if not 0 <= shifted <= studies:
        print(f"error: --shifted {shifted} must lie within 0..--studies ({studies}): shifted conditions "
              "re-scan the first studies of the reference set")
        return 2
    first_seed = VALIDATION_SEED if validation else HELD_OUT_SEED
    registry = EngineRegistry(config.engines, config.node.data_dir)
    settings = TriageSettings.from_params(config.anomaly_triage, {"model": model})
    engine = registry.get(settings.model)
    try:
        if calibration:
            value = calibrate(engine, settings, calibration, calibration_matrix, render_workers)
            print(f"calibration_ml for the urgent threshold at the 95th percentile of healthy: {value:.3f}")
            settings = TriageSettings.from_params(config.anomaly_triage, {"model": model,
                                                                          "calibration_ml": value})
        results = [evaluate(engine, settings, reference, studies, first_seed, matrix,
                            render_workers=render_workers)]
        # Paired: each shifted condition re-scans the reference's first heads and lesions.
        for condition in others if shifted else []:
            results.append(evaluate(engine, settings, condition, shifted, first_seed, matrix,
                                    render_workers=render_workers))
    finally:
        registry.close()
    text = render(results, settings, engine, matrix)
    print(text)
    if write_card:
        card = registry.models_dir / settings.model / "card.md"
        write_into_card(card, text)
        print(f"written into {card}")
    return 0
