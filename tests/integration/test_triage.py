"""Anomaly triage end to end: storescu → node → model → SC + SR → a real Orthanc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

from tests.support.dciodvfy import validate
from tests.support.dcmtk import encode, storescu
from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "engines" / "anomaly_triage" / "model.onnx"

TRIAGE_RULES = [{
    "name": "emergency-head-ct",
    "when": {"Modality": "CT", "BodyPartExamined": {"in": ["HEAD", "BRAIN"]}},
    "run": "anomaly_triage",
    "send_to": ["pacs"],
}]


def _content_item(report: Dataset, code: str) -> Dataset | None:
    """The first content item of the SR whose concept name has this code value, or None."""
    def walk(items: Any) -> Dataset | None:
        for item in items or []:
            names = item.get("ConceptNameCodeSequence") or []
            if names and names[0].CodeValue == code:
                return item
            found = walk(item.get("ContentSequence"))
            if found is not None:
                return found
        return None

    return walk(report.ContentSequence)


def _score(report: Dataset) -> float:
    """The study anomaly score (code DN0001) from the SR content tree."""
    item = _content_item(report, "DN0001")
    assert item is not None and item.ValueType == "NUM", "no anomaly score in the report"
    return float(item.MeasuredValueSequence[0].NumericValue)


def _report_and_heatmaps(orthanc: Orthanc) -> list[Dataset] | None:
    """Everything in Orthanc once a report and at least one heat map have arrived, else None."""
    found = [pydicom.dcmread(__import__("io").BytesIO(orthanc.instance_file(oid)))
             for oid in orthanc.instance_ids()]
    return found if any(ds.Modality == "SR" for ds in found) and len(found) >= 2 else None


def _triaged_in_orthanc(
    tmp_path: Path, orthanc: Orthanc, files: list[Path], worklist_columns: str, *,
    rules: list[dict[str, Any]] = TRIAGE_RULES, storescu_extra: list[str] | None = None,
) -> tuple[list[Dataset], list[tuple[Any, ...]]]:
    """Send one series to a node that triages into `orthanc`; once the report and its heat maps
    are there and the job is done, what Orthanc holds and the node's worklist columns."""
    pacs = {"pacs": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet}}
    with NodeProcess(tmp_path / "node", rules=rules, destinations=pacs,
                     engines={"models_dir": str(REPO / "engines"), "backend": "onnxruntime"}) as node:
        result = storescu(node.port, files, extra=storescu_extra)
        assert result.returncode == 0, result.stderr
        found = wait_for(lambda: _report_and_heatmaps(orthanc), 300,
                         "the report and its heat maps in Orthanc", interval=0.5)
        assert node.query("SELECT state, error FROM jobs") == [("done", None)], node.log()[-3000:]
        return found, node.query(f"SELECT {worklist_columns} FROM worklist")


@pytest.mark.skipif(not MODEL.exists(), reason="the anomaly_triage model is not in the zoo")
def test_haemorrhage_scores_above_healthy_and_results_reach_orthanc(tmp_path: Path, orthanc: Orthanc) -> None:
    from dicomnode.phantoms import make_study, write_series

    bleed = write_series(make_study(101, "ich", slice_thickness_mm=5.0, lesion_size="large", matrix=256),
                         tmp_path / "bleed")
    # Scanners and PACS often send CT JPEG-lossless compressed: the bleed arrives that way.
    bleed = encode(bleed, tmp_path / "bleed-jpeg", "JPEG Lossless SV1")
    healthy = write_series(make_study(102, None, slice_thickness_mm=5.0, matrix=256), tmp_path / "healthy")
    # One slice of the healthy series is lost on the way: the worklist must say so.
    healthy = sorted(healthy, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    del healthy[len(healthy) // 2]
    pacs = {"pacs": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet}}
    with NodeProcess(tmp_path / "node", rules=TRIAGE_RULES, destinations=pacs,
                     engines={"models_dir": str(REPO / "engines"), "backend": "onnxruntime"}) as node:
        for files, proposal in ((bleed, ["-xs"]), (healthy, [])):
            result = storescu(node.port, files, extra=proposal)
            assert result.returncode == 0, result.stderr
        stored = node.query("SELECT DISTINCT transfer_syntax FROM instances ORDER BY transfer_syntax")
        assert stored == [(ExplicitVRLittleEndian,), (JPEGLosslessSV1,)]

        def results() -> dict[str, list[Dataset]] | None:
            found: dict[str, list[Dataset]] = {}
            for oid in orthanc.instance_ids():
                ds = pydicom.dcmread(__import__("io").BytesIO(orthanc.instance_file(oid)))
                found.setdefault(str(ds.Modality), []).append(ds)
            reports = found.get("SR", [])
            return found if len(reports) == 2 and len(found.get("OT", [])) >= 2 else None

        found = wait_for(results, 180, "two reports and their heat maps in Orthanc", interval=0.5)
        rows = node.query("SELECT state, error FROM jobs")
        assert rows == [("done", None), ("done", None)], node.log()[-3000:]
        warnings = dict(node.query("SELECT study_uid, warnings FROM worklist"))

    study_of = {pydicom.dcmread(bleed[0]).StudyInstanceUID: "bleed",
                pydicom.dcmread(healthy[0]).StudyInstanceUID: "healthy"}
    scores = {study_of[r.StudyInstanceUID]: _score(r) for r in found["SR"]}
    assert scores["bleed"] > scores["healthy"], scores
    warned = {study_of[uid]: json.loads(text) for uid, text in warnings.items()}
    assert warned["bleed"] == []
    assert len(warned["healthy"]) == 1 and warned["healthy"][0].startswith("a slice may be missing between")
    for i, ds in enumerate(found["SR"] + found["OT"]):
        assert ds.SeriesDescription.startswith("AI")
        assert ds.StudyInstanceUID in study_of
        path = tmp_path / f"result{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert validate(path) == [], f"{ds.Modality} {ds.SeriesDescription}"
    assert all(ds.BurnedInAnnotation == "YES" for ds in found["OT"])


@pytest.mark.skipif(not MODEL.exists(), reason="the anomaly_triage model is not in the zoo")
def test_an_enhanced_ct_is_triaged_frame_by_frame(tmp_path: Path, orthanc: Orthanc) -> None:
    from dicomnode.phantoms import make_study, write_enhanced_series

    study = make_study(103, "ich", slice_thickness_mm=5.0, lesion_size="large", matrix=256)
    enhanced = write_enhanced_series(study, tmp_path / "enhanced")
    image = pydicom.dcmread(enhanced, stop_before_pixels=True)
    # -R: propose the classes of the files; storescu's default list lacks enhanced CT
    found, listed = _triaged_in_orthanc(tmp_path, orthanc, [enhanced],
                                        "top_slice_sop_uid, top_slice_frame_number", storescu_extra=["-R"])

    (report,) = [ds for ds in found if ds.Modality == "SR"]
    heatmaps = [ds for ds in found if ds.Modality == "OT"]
    assert _score(report) >= 70.0  # a large haemorrhage: critical
    # The worklist names the frame that holds the top slice: the instance alone is the whole series.
    ((top_uid, top_frame),) = listed
    assert top_uid == image.SOPInstanceUID and 1 <= top_frame <= study.shape[0]
    frames = set()
    for ds in heatmaps:
        (source,) = ds.SourceImageSequence
        assert source.ReferencedSOPInstanceUID == image.SOPInstanceUID
        frames.add(int(source.ReferencedFrameNumber))
    assert len(frames) == len(heatmaps) and frames <= set(range(1, study.shape[0] + 1))
    for i, ds in enumerate(found):
        assert ds.StudyInstanceUID == image.StudyInstanceUID and ds.SeriesDescription.startswith("AI")
        path = tmp_path / f"result{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert validate(path) == [], f"{ds.Modality} {ds.SeriesDescription}"


def _as_series_of(files: list[Path], study: Dataset, folder: Path, number: int, description: str,
                  orientation: list[float] | None = None, noise_sd: float = 0.0,
                  lossy_ratio: float | None = None) -> list[Path]:
    """The slices as another series of `study` (same patient), optionally with another
    orientation, with noise added (stored values) as a sharp kernel leaves it, or JPEG 2000
    compressed with loss."""
    from dicomnode.phantoms.dicom_writer import compress_lossy

    folder.mkdir()
    series_uid = pydicom.uid.generate_uid()
    rng = np.random.default_rng(number)
    out = []
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyID"):
            setattr(ds, keyword, study.get(keyword, ""))
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, number, description
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        if orientation is not None:
            ds.ImageOrientationPatient = orientation
        if noise_sd:
            stored = ds.pixel_array.astype(np.float64) + rng.normal(0.0, noise_sd, ds.pixel_array.shape)
            info = np.iinfo(ds.pixel_array.dtype)
            ds.PixelData = np.clip(np.rint(stored), info.min, info.max).astype(ds.pixel_array.dtype).tobytes()
        if lossy_ratio is not None:
            compress_lossy(ds, lossy_ratio)
        out.append(folder / path.name)
        ds.save_as(out[-1], enforce_file_format=True)
    return out


@pytest.mark.skipif(not MODEL.exists(), reason="the anomaly_triage model is not in the zoo")
def test_a_study_of_several_series_shows_its_most_severe_result(tmp_path: Path, orthanc: Orthanc) -> None:
    """A head CT study brings several series the rule sends to triage, finished in any order: the
    bleed's critical result stays on the worklist beside a healthy-looking series, and a coronal
    reformat, a bone-kernel series, a contrast-enhanced series whose headers leave the agent
    out and a copy compressed with loss far too hard, which cannot be triaged, are warnings, not a
    failed study."""
    from dicomnode.phantoms import make_study, write_series

    bleed = write_series(make_study(104, "ich", slice_thickness_mm=5.0, lesion_size="large", matrix=256),
                         tmp_path / "bleed")
    study = pydicom.dcmread(bleed[0], stop_before_pixels=True)
    healthy = write_series(make_study(105, None, slice_thickness_mm=5.0, matrix=256), tmp_path / "healthy")
    quiet = _as_series_of(healthy, study, tmp_path / "quiet", 3, "HEAD 5mm SOFT")
    coronal = _as_series_of(healthy, study, tmp_path / "coronal", 4, "COR MPR",
                            orientation=[1.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    bone = _as_series_of(bleed, study, tmp_path / "bone", 5, "HEAD BONE", noise_sd=60.0)
    enhanced = write_series(make_study(105, None, slice_thickness_mm=5.0, matrix=256, contrast_hu=175.0),
                            tmp_path / "enhanced-source")
    contrast = _as_series_of(enhanced, study, tmp_path / "contrast", 6, "HEAD 5mm POST")
    squeezed = _as_series_of(bleed, study, tmp_path / "squeezed", 7, "HEAD 5mm J2K", lossy_ratio=60.0)
    pacs = {"pacs": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet}}
    with NodeProcess(tmp_path / "node", rules=TRIAGE_RULES, destinations=pacs,
                     engines={"models_dir": str(REPO / "engines"), "backend": "onnxruntime"}) as node:
        for files in (bleed, quiet, coronal, bone, contrast, squeezed):
            result = storescu(node.port, files, extra=["--propose-j2k-lossy"] if files is squeezed else [])
            assert result.returncode == 0, result.stderr

        def settled() -> list[tuple[Any, ...]] | None:
            rows = node.query("SELECT state FROM worklist_series WHERE study_uid = ?", study.StudyInstanceUID)
            return rows if len(rows) == 6 else None

        wait_for(settled, 300, "six triage results for the study", interval=0.5)
        (row,) = node.query("SELECT state, category, series_uid, warnings, error FROM worklist")
        scores = dict(node.query("SELECT series_uid, score FROM worklist_series"))

    state, category, series_uid, warnings, error = row
    assert (state, category, series_uid, error) == ("done", "critical", study.SeriesInstanceUID, None)
    assert scores[study.SeriesInstanceUID] > scores[pydicom.dcmread(quiet[0]).SeriesInstanceUID]
    coronal_warning, bone_warning, contrast_warning, lossy_warning = sorted(json.loads(warnings))
    assert coronal_warning.startswith("series 4 COR MPR was not triaged:"), coronal_warning
    assert "not an axial series" in coronal_warning, coronal_warning
    assert bone_warning.startswith("series 5 HEAD BONE was not triaged:"), bone_warning
    assert "image noise in the brain" in bone_warning or "no brain tissue" in bone_warning, bone_warning
    # Read as non-contrast, this healthy head's vessels score critical (raw 91 ml).
    assert contrast_warning.startswith("series 6 HEAD 5mm POST was not triaged:"), contrast_warning
    assert "looks contrast-enhanced" in contrast_warning, contrast_warning
    # Refused for its compression, before its artefacts are mistaken for anything else.
    assert lossy_warning.startswith("series 7 HEAD 5mm J2K was not triaged:"), lossy_warning
    assert "lossy compressed (every instance; ISO_15444_1;" in lossy_warning, lossy_warning
    assert "anomaly_triage.max_lossy_ratio (20:1 for 0.5 mm pixels) allows" in lossy_warning, lossy_warning


@pytest.mark.skipif(not MODEL.exists(), reason="the anomaly_triage model is not in the zoo")
def test_a_thin_noisy_series_is_triaged_as_running_slabs(tmp_path: Path, orthanc: Orthanc) -> None:
    """0.625 mm slices with their full noise (13-20 HU on this scanner profile): read as slabs,
    the bleed is critical and every slice keeps its own heat map reference."""
    from dicomnode.phantoms import make_study, write_series
    from dicomnode.phantoms.volume import FULL_NOISE_CAP_HU

    thin = write_series(make_study(106, "ich", slice_thickness_mm=0.625, lesion_size="large", matrix=256,
                                   vendor="philips", noise_cap_hu=FULL_NOISE_CAP_HU), tmp_path / "thin")
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in thin}
    found, ((category, warnings),) = _triaged_in_orthanc(tmp_path, orthanc, thin, "category, warnings")

    assert category == "critical"
    (warning,) = json.loads(warnings)
    assert "scored as running" in warning and "mm slabs" in warning, warning
    (report,) = [ds for ds in found if ds.Modality == "SR"]
    assert _score(report) >= 70.0
    heatmaps = [ds for ds in found if ds.Modality == "OT"]
    referenced = [str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID) for ds in heatmaps]
    assert len(set(referenced)) == len(heatmaps) and set(referenced) <= sources
    for i, ds in enumerate([report, *heatmaps[:5]]):
        path = tmp_path / f"result{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert validate(path) == [], f"{ds.Modality} {ds.SeriesDescription}"


@pytest.mark.skipif(not MODEL.exists(), reason="the anomaly_triage model is not in the zoo")
def test_a_series_compressed_with_loss_is_triaged_and_its_results_say_so(tmp_path: Path,
                                                                         orthanc: Orthanc) -> None:
    """JPEG 2000 at about 4:1 (these 256 slices' pixels are near 1 mm: the node accepts up to
    5-7:1), as an archive that saves space sends it: the bleed is still critical, the worklist
    names the compression, and the heat maps, made of its pixels, carry Lossy Image Compression
    as DICOM asks."""
    from dicomnode.phantoms import make_study, write_series

    study = make_study(107, "ich", slice_thickness_mm=5.0, lesion_size="large", matrix=256)
    files = write_series(study, tmp_path / "lossy", lossy_ratio=4.0)
    found, ((category, warnings),) = _triaged_in_orthanc(tmp_path, orthanc, files, "category, warnings",
                                                         storescu_extra=["--propose-j2k-lossy"])

    assert category == "critical"
    (warning,) = json.loads(warnings)
    assert warning.startswith("lossy compressed (every instance; ISO_15444_1; "), warning
    assert "the model learnt lossless images" in warning, warning
    (report,) = [ds for ds in found if ds.Modality == "SR"]
    heatmaps = [ds for ds in found if ds.Modality == "OT"]
    assert heatmaps and all(ds.LossyImageCompression == "01" for ds in heatmaps)
    assert all(ds.LossyImageCompressionMethod == "ISO_15444_1" for ds in heatmaps)
    for i, ds in enumerate([report, *heatmaps[:3]]):
        path = tmp_path / f"result{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert validate(path) == [], f"{ds.Modality} {ds.SeriesDescription}"


@pytest.mark.skipif(not MODEL.exists(), reason="the anomaly_triage model is not in the zoo")
def test_a_chronic_subdural_pushing_the_brain_is_named_by_its_midline_shift(tmp_path: Path,
                                                                           orthanc: Orthanc) -> None:
    """A weeks-old collection, hypodense like the fluid it lies in, that moves the septum 6-7 mm:
    the worklist names the shift and, with midline_shift_critical_mm set, ranks it critical."""
    from dicomnode.phantoms import make_study, write_series

    study = make_study(21, "sdh", slice_thickness_mm=5.0, matrix=256, lesion_size="large",
                       subdural_age="chronic", mass_effect=True)
    assert abs(study.details["septum_shift_mm"]) >= 5.0
    files = write_series(study, tmp_path / "pushed")
    rules = [{**TRIAGE_RULES[0], "params": {"midline_shift_critical_mm": 5}}]
    received, ((category, warnings),) = _triaged_in_orthanc(tmp_path, orthanc, files, "category, warnings",
                                                            rules=rules)

    assert category == "critical"
    shifts = [w for w in json.loads(warnings) if w.startswith("midline shift")]
    assert len(shifts) == 1, warnings
    # The phantom's shift is along RAS x, whose positive direction is the patient's right.
    side = "left" if study.details["septum_shift_mm"] < 0 else "right"
    assert f"to the patient's {side}" in shifts[0]

    # The report carries the measurement: its size in mm and the side, as the worklist says.
    (report,) = [ds for ds in received if ds.Modality == "SR"]
    shift, direction = _content_item(report, "DN0005"), _content_item(report, "DN0006")
    assert shift is not None and direction is not None
    value = shift.MeasuredValueSequence[0]
    assert value.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    assert abs(float(value.NumericValue) - abs(study.details["septum_shift_mm"])) <= 2.5
    assert direction.ConceptCodeSequence[0].CodeMeaning.lower() == side
    path = tmp_path / "report.dcm"
    report.save_as(path)
    assert validate(path) == []
