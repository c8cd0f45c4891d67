"""`dicomnode calibrate anomaly_triage PATH...`: fit the score scale to a site's own normal studies.

The study score is 100 x (1 - exp(-raw / calibration_ml)). The shipped calibration_ml puts the
95th percentile of healthy *phantoms* at the urgent threshold; a site's scanners, protocols
and patients give healthy heads another raw score, and every new model shifts it too. Given
folders of head CT series that a radiologist has read as normal, this command scores each
series exactly as the node would, prints the scores, and fits calibration_ml so that about
5 % of these normal studies would reach the urgent threshold. Nothing is written: the value
goes into the configuration by hand, where it is reviewed.

Series the generator cannot analyse (localisers, non-axial, mixed sizes, no pixel data) are
listed with the reason and left out of the fit.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from tqdm import tqdm

from dicomnode.config import Config
from dicomnode.engines import Engine, EngineRegistry
from dicomnode.errors import ConfigError, DicomNodeError
from dicomnode.generators.anomaly_triage import TriageSettings, analyse, fit_calibration_ml
from dicomnode.generators.ct import SeriesRejected
from dicomnode.sending import iter_dicom_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesScore:
    series_uid: str
    study_uid: str
    description: str
    slices: int
    raw_ml: float | None  # None: rejected
    reason: str = ""


def group_series(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Files under `paths` grouped by Series Instance UID (files without one are skipped)."""
    series: dict[str, list[Path]] = defaultdict(list)
    for path, header in iter_dicom_headers(paths):
        uid = header.get("SeriesInstanceUID")
        if not uid:
            log.warning("%s: no Series Instance UID, skipped", path)
            continue
        series[str(uid)].append(path)
    return dict(series)


def score_series(series: dict[str, list[Path]], engine: Engine, settings: TriageSettings,
                 progress: bool = True) -> Iterator[SeriesScore]:
    """Each series scored as the node scores it, with this engine and these settings."""
    for uid, paths in tqdm(series.items(), desc="series", unit="series", disable=not progress):
        # Headers were read to group the files; pixels only now, one series at a time.
        datasets = [ds for _, ds in iter_dicom_headers(paths, pixels=True)]
        first = datasets[0] if datasets else Dataset()
        study = str(first.get("StudyInstanceUID", ""))
        description = str(first.get("SeriesDescription", ""))
        try:
            raw = analyse(datasets, engine, settings).raw_ml
        except SeriesRejected as exc:
            yield SeriesScore(uid, study, description, len(datasets), None, str(exc))
            continue
        yield SeriesScore(uid, study, description, len(datasets), raw)


def cmd_calibrate(config: Config, paths: Sequence[Path], model: str | None,
                  min_series: int) -> int:
    """Print each series' score and the fitted calibration_ml; exit 1 when too few series scored.

    Below about 20 series the 95th percentile is little more than the largest score.
    """
    try:
        settings = TriageSettings.from_params(config.anomaly_triage, {"model": model} if model else {})
        series = group_series(paths)
        if not series:
            print(f"error: no DICOM series under {', '.join(str(p) for p in paths)}")
            return 1
        registry = EngineRegistry(config.engines, config.node.data_dir)
        try:
            engine = registry.get(settings.model)
            scores = list(score_series(series, engine, settings))
        finally:
            registry.close()
    except (ConfigError, DicomNodeError) as exc:
        print(f"error: {exc}")
        return 2
    model_label = f"{engine.manifest.name} {engine.manifest.version}"
    print(f"model {model_label}; the fit holds for this model only (refit after a model update)")
    print(f"{'raw ml':>8}  {'score':>5}  slices  series")
    for item in scores:
        label = f"{item.series_uid} {item.description}".rstrip()
        if item.raw_ml is None:
            print(f"{'-':>8}  {'-':>5}  {item.slices:>6}  {label}: not scored, {item.reason}")
        else:
            print(f"{item.raw_ml:8.3f}  {settings.score(item.raw_ml):5.1f}  {item.slices:>6}  {label}")
    raws = [item.raw_ml for item in scores if item.raw_ml is not None]
    flagged = sum(settings.score(raw) >= settings.urgent for raw in raws)
    print(f"{len(raws)} of {len(scores)} series scored; with calibration_ml {settings.calibration_ml:g}, "
          f"{flagged} reach urgent ({settings.urgent:g})")
    per_study = Counter(item.study_uid for item in scores if item.raw_ml is not None)
    repeated = sum(count > 1 for count in per_study.values())
    if repeated:
        print(f"note: {repeated} stud{'y' if repeated == 1 else 'ies'} gave more than one scored series; "
              "each series counts in the fit, so a study with several weighs more (keep one per study)")
    if len(raws) < min_series:
        print(f"error: {len(raws)} normal series scored; at least {min_series} are needed to fit "
              "calibration_ml (their 95th percentile sets it)")
        return 1
    try:
        fitted = fit_calibration_ml(raws, settings)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    print(f"calibration_ml that puts the 95th percentile of these {len(raws)} normal series at urgent: "
          f"{fitted:.3f}")
    print(f"configuration (model {model_label}):\n  anomaly_triage:\n    calibration_ml: {fitted:.3f}")
    return 0
