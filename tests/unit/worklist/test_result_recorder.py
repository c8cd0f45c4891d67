"""The job worker's results reach the worklist, and the RIS hears of each escalation once."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset

from dicomnode.generators import GeneratorOutput
from dicomnode.generators.base import TriageSummary
from dicomnode.jobs import Job
from dicomnode.results import ResultRecorder
from dicomnode.telemetry import Telemetry
from dicomnode.worklist.store import WorklistStore


class RecordedNotices:
    """Stands in for the HL7 queue: records which studies were queued for the RIS."""

    def __init__(self) -> None:
        self.queued: list[str] = []

    def enqueue(self, study_uid: str) -> None:
        self.queued.append(study_uid)


def _series(study_uid: str, number: int, description: str) -> tuple[Job, list[Dataset]]:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesNumber, ds.SeriesDescription = study_uid, number, description
    ds.AccessionNumber, ds.PatientName, ds.PatientID = "ACC1", "Doe^Jane", "PID-1"
    job = Job(id=number, series_uid=f"{study_uid}.{number}", rule="emergency-head-ct",
              generator="anomaly_triage", params={}, send_to=[], created_at=100.0, arrived_at=90.0)
    return job, [ds]


def _finish(recorder: ResultRecorder, study_uid: str, number: int, category: str | None, score: float = 0.0,
            error: str | None = None, description: str = "HEAD") -> None:
    job, datasets = _series(study_uid, number, description)
    recorder.started(job, datasets)
    output = None if category is None else GeneratorOutput([], TriageSummary(score, category, None, None))
    recorder.finished(job, datasets, output, error, 1.0)


def test_the_ris_hears_of_each_escalation_of_a_study_once(tmp_path: Path) -> None:
    store = WorklistStore(tmp_path / "index.sqlite3")
    notices = RecordedNotices()
    recorder = ResultRecorder(store, Telemetry(), "onnxruntime", notices)  # type: ignore[arg-type]
    try:
        _finish(recorder, "1.1", 2, "urgent", 50.0)
        _finish(recorder, "1.1", 3, "urgent", 45.0)  # another series, the study still urgent: no news
        _finish(recorder, "1.1", 2, "urgent", 52.0)  # the series sent again: no news
        assert notices.queued == ["1.1"]
        _finish(recorder, "1.1", 4, "critical", 90.0)  # escalated: told again
        _finish(recorder, "1.1", 5, "routine", 3.0)
        _finish(recorder, "1.1", 6, None, error="series rejected: not an axial series", description="COR MPR")
        assert notices.queued == ["1.1", "1.1"]
        entry = store.get("1.1")
        assert entry is not None and (entry.category, entry.score, entry.state) == ("critical", 90.0, "done")
        assert entry.warnings == ("series 6 COR MPR was not triaged: series rejected: not an axial series",)
        _finish(recorder, "2.1", 2, "routine", 5.0)  # routine studies are not sent
        assert notices.queued == ["1.1", "1.1"]
    finally:
        store.close()
