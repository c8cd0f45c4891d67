"""Where finished jobs go besides the PACS: the triage worklist, the metrics and the RIS."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal, cast

from pydicom import Dataset

from dicomnode.generators import GeneratorOutput
from dicomnode.jobs import Job
from dicomnode.telemetry import Telemetry
from dicomnode.worklist.hl7_queue import Hl7Queue
from dicomnode.worklist.store import TriageEntry, WorklistStore

log = logging.getLogger(__name__)

TRIAGE_GENERATORS = frozenset({"anomaly_triage"})


def _category(value: str) -> Literal["critical", "urgent", "routine"]:
    if value not in ("critical", "urgent", "routine"):
        raise ValueError(f"unknown triage category {value!r}")
    return cast(Literal["critical", "urgent", "routine"], value)


def _text(ds: Dataset | None, keyword: str) -> str:
    return "" if ds is None else str(ds.get(keyword, "") or "")


def _series_label(ds: Dataset | None) -> str:
    """How a reader finds the series in the viewer: its number and description."""
    return " ".join(part for part in (_text(ds, "SeriesNumber"), _text(ds, "SeriesDescription")) if part)


class ResultRecorder:
    """The job worker's observer: every triage job ends on the worklist, done or failed."""

    def __init__(self, worklist: WorklistStore, telemetry: Telemetry, backend: str,
                 hl7: Hl7Queue | None) -> None:
        self._worklist = worklist
        self._telemetry = telemetry
        self._backend = backend
        self._hl7 = hl7

    def started(self, job: Job, datasets: Sequence[Dataset]) -> None:
        if job.generator not in TRIAGE_GENERATORS or not datasets:
            return
        first = datasets[0]
        self._worklist.record_pending(
            str(first.StudyInstanceUID), series_uid=job.series_uid,
            accession_number=_text(first, "AccessionNumber"), patient_name=_text(first, "PatientName"),
            patient_id=_text(first, "PatientID"), study_description=_text(first, "StudyDescription"),
            arrived_at=job.arrived_at,
        )

    def finished(self, job: Job, datasets: Sequence[Dataset], output: GeneratorOutput | None,
                 error: str | None, seconds: float) -> None:
        self._telemetry.job_finished(job.generator, "failed" if error else "done")
        if output is not None:
            self._telemetry.observe_inference(job.generator, self._backend, seconds)
        if job.generator not in TRIAGE_GENERATORS:
            return
        first = datasets[0] if datasets else None
        study_uid = _text(first, "StudyInstanceUID") or f"series:{job.series_uid}"
        now = time.time()
        if error is not None or output is None or output.triage is None:
            self._worklist.record_failure(
                study_uid, error or "no triage result", series_uid=job.series_uid,
                series_label=_series_label(first),
                accession_number=_text(first, "AccessionNumber"),
                study_description=_text(first, "StudyDescription"), arrived_at=job.arrived_at,
                failed_at=now,
            )
            return
        triage = output.triage
        before, after = self._worklist.record_result(TriageEntry(
            study_uid=study_uid, series_uid=job.series_uid,
            accession_number=_text(first, "AccessionNumber"), patient_name=_text(first, "PatientName"),
            patient_id=_text(first, "PatientID"), study_description=_text(first, "StudyDescription"),
            arrived_at=job.arrived_at, result_at=now, score=triage.score, category=_category(triage.category),
            top_slice_sop_uid=triage.top_slice_sop_uid, top_slice_index=triage.top_slice_index,
            top_slice_frame_number=triage.top_slice_frame_number, series_label=_series_label(first),
            thumbnail_png=triage.thumbnail_png, warnings=triage.warnings,
        ))
        self._telemetry.receive_to_result_seconds.observe(max(now - job.arrived_at, 0.0))
        log.info("study %s on the worklist: series %s %s, score %.1f", study_uid, job.series_uid,
                 triage.category, triage.score)
        # The RIS hears of a study when the category it shows becomes urgent or critical, not again
        # for each further series of it (a series sent again whose result is unchanged included).
        if self._hl7 is not None and after in ("critical", "urgent") and after != before:
            self._hl7.enqueue(study_uid)

