"""dicomnode.outputs: heat-map and synthetic Secondary Captures, the triage SR, labels, colormap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage, generate_uid

from dicomnode.outputs import (
    AlgorithmInfo,
    SliceFinding,
    TriageFinding,
    heatmap_secondary_capture,
    hottest_region,
    synthetic_image_sc,
    triage_report,
)
from dicomnode.outputs.heatmap import inferno_lut, overlay, window_to_uint8
from dicomnode.outputs.labels import burn_in, glyph, render_line, text_block, wrap
from dicomnode.outputs.secondary_capture import source_hu
from tests.support.dciodvfy import require_dciodvfy, validate, warnings
from tests.support.dicomdata import ct_series
from tests.support.sr import walk

SIZE = 128
BLOB = (slice(40, 70), slice(50, 90))


@pytest.fixture
def sources(tmp_path: Path) -> list[Dataset]:
    paths = ct_series(tmp_path / "src", 4, rows=SIZE, columns=SIZE)
    return [pydicom.dcmread(p) for p in paths]


@pytest.fixture
def algorithm() -> AlgorithmInfo:
    return AlgorithmInfo("anomaly_triage", "1.0.0", parameters={"critical": "70", "urgent": "40"})


@pytest.fixture
def anomaly() -> np.ndarray:
    a = np.zeros((SIZE, SIZE), dtype=np.float32)
    a[BLOB] = 60.0
    a[55, 70] = 95.0
    return a


def assert_valid(ds: Dataset, path: Path) -> Dataset:
    """Write as a DICOM file, require no dciodvfy errors (printing warnings), read it back."""
    require_dciodvfy()
    ds.save_as(path, enforce_file_format=True)
    for line in warnings(path):
        print(f"{path.name}: {line}")
    assert validate(path) == []
    return pydicom.dcmread(path)


def assert_same_patient_and_study(ds: Dataset, source: Dataset) -> None:
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "AccessionNumber", "StudyID", "StudyDate"):
        assert ds[keyword].value == source[keyword].value, keyword


def heatmap(source: Dataset, anomaly: np.ndarray, algorithm: AlgorithmInfo, *, series_uid: str | None = None,
            window: tuple[float, float] = (40.0, 80.0)) -> Dataset:
    return heatmap_secondary_capture(
        source, anomaly, series_uid=series_uid or generate_uid(), series_number=901, instance_number=1,
        algorithm=algorithm, slice_score=73.25, window=window,
    )


# --- validator -------------------------------------------------------------------------------


def test_validator_reports_errors(sources: list[Dataset], anomaly: np.ndarray, algorithm: AlgorithmInfo,
                                  tmp_path: Path) -> None:
    require_dciodvfy()
    ds = heatmap(sources[0], anomaly, algorithm)
    del ds.ConversionType
    ds.BurnedInAnnotation = "MAYBE"
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    errors = validate(tmp_path / "bad.dcm")
    assert any("ConversionType" in e for e in errors)
    assert any("Burned In Annotation" in e for e in errors)


# --- heat-map Secondary Capture --------------------------------------------------------------


@pytest.mark.parametrize("size", [64, SIZE])
def test_heatmap_sc_passes_dciodvfy(tmp_path: Path, algorithm: AlgorithmInfo, size: int) -> None:
    source = pydicom.dcmread(ct_series(tmp_path / "src", 3, rows=size, columns=size)[1])
    ds = heatmap(source, np.full((size, size), 30.0, dtype=np.float32), algorithm)
    assert_valid(ds, tmp_path / "sc.dcm")


def test_heatmap_sc_identity_and_references(sources: list[Dataset], anomaly: np.ndarray,
                                            algorithm: AlgorithmInfo, tmp_path: Path) -> None:
    source = sources[1]
    series_uid = generate_uid()
    ds = assert_valid(heatmap(source, anomaly, algorithm, series_uid=series_uid), tmp_path / "sc.dcm")
    other = heatmap(source, anomaly, algorithm, series_uid=series_uid)

    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert_same_patient_and_study(ds, source)
    assert ds.SeriesInstanceUID == series_uid != source.SeriesInstanceUID
    assert ds.SOPInstanceUID not in (source.SOPInstanceUID, other.SOPInstanceUID)
    assert ds.SeriesDescription == "AI ANOMALY MAP (anomaly_triage 1.0.0)"
    assert ds.BurnedInAnnotation == "YES"
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3 and ds.BitsAllocated == 8
    assert "anomaly_triage 1.0.0" in ds.DerivationDescription
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.5]
    assert list(ds.PatientOrientation) == ["L", "P"]

    (ref,) = ds.SourceImageSequence
    assert ref.ReferencedSOPClassUID == source.SOPClassUID
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"

    ours = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "dicomnode"]
    assert len(ours) == 1
    assert ours[0].ManufacturerModelName == "anomaly_triage"
    assert ours[0].SoftwareVersions == "1.0.0"


def test_heatmap_pixels_overlay_and_label(sources: list[Dataset], anomaly: np.ndarray,
                                          algorithm: AlgorithmInfo) -> None:
    source = sources[0]
    ds = heatmap(source, anomaly, algorithm)
    pixels = ds.pixel_array
    grey = window_to_uint8(source_hu(source), 40, 80)
    unlabelled = overlay(grey, anomaly, threshold_hu=20.0, max_hu=100.0)
    assert pixels.shape == (SIZE, SIZE, 3)

    differs = np.any(pixels != unlabelled, axis=2)
    label_rows = np.flatnonzero(differs.any(axis=1))
    # Label at the top, score at the bottom, and nothing in between touched.
    assert label_rows.min() <= 2 and label_rows.max() >= SIZE - 3
    assert not differs[30:100].any()
    top = pixels[:12]
    assert (np.all(top == 255, axis=2)).sum() > 50, "white text ink in the label"
    assert (np.all(top == 0, axis=2)).sum() > 50, "black box behind the label"

    # Transparent below the threshold (grey, R=G=B), coloured inside the anomaly.
    middle = pixels[30:100]
    below = anomaly[30:100] < 20
    assert np.all(middle[below][:, 0] == middle[below][:, 1])
    assert np.array_equal(middle[below][:, 0], grey[30:100][below])
    blob = pixels[BLOB]
    assert np.all(blob[..., 0].astype(int) > blob[..., 2].astype(int))


def test_heatmap_sc_without_orientation(sources: list[Dataset], anomaly: np.ndarray,
                                        algorithm: AlgorithmInfo, tmp_path: Path) -> None:
    source = sources[0]
    del source.ImageOrientationPatient
    ds = assert_valid(heatmap(source, anomaly, algorithm), tmp_path / "sc.dcm")
    assert "PatientOrientation" in ds and not ds.PatientOrientation  # Type 2: present, empty


def test_heatmap_window_is_configurable(sources: list[Dataset], anomaly: np.ndarray,
                                        algorithm: AlgorithmInfo) -> None:
    narrow = heatmap(sources[0], anomaly, algorithm).pixel_array
    wide = heatmap(sources[0], anomaly, algorithm, window=(400.0, 1800.0))
    assert not np.array_equal(narrow[30:40], wide.pixel_array[30:40])
    assert "W1800/L400" in wide.DerivationDescription


def test_heatmap_rejects_mismatched_map(sources: list[Dataset], algorithm: AlgorithmInfo) -> None:
    with pytest.raises(ValueError, match="does not match"):
        heatmap(sources[0], np.zeros((SIZE, SIZE + 1), dtype=np.float32), algorithm)


# --- synthetic Secondary Capture -------------------------------------------------------------


def test_synthetic_sc(sources: list[Dataset], algorithm: AlgorithmInfo, tmp_path: Path) -> None:
    source = sources[2]
    hu = np.linspace(-1000.0, 1000.0, SIZE * SIZE).reshape(SIZE, SIZE)
    synth = AlgorithmInfo("contrast_synthesis", "0.3.1")
    ds = synthetic_image_sc(source, hu, series_uid=generate_uid(), series_number=902, instance_number=3,
                            algorithm=synth, description="SYNTHETIC CONTRAST (contrast_synthesis 0.3.1)")
    ds = assert_valid(ds, tmp_path / "synthetic.dcm")

    assert_same_patient_and_study(ds, source)
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.SeriesDescription == "AI SYNTHETIC CONTRAST (contrast_synthesis 0.3.1)"
    assert ds.BurnedInAnnotation == "YES"
    assert ds.ConversionType == "SYN"
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 16
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert [(float(ds.WindowCenter), float(ds.WindowWidth))] == [(40.0, 80.0)]
    (ours,) = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "dicomnode"]
    assert ours.PurposeOfReferenceCodeSequence[0].CodeMeaning == "Synthesizing Equipment"
    assert (ours.ManufacturerModelName, ours.SoftwareVersions) == ("contrast_synthesis", "0.3.1")

    restored = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert np.allclose(restored[40:], np.rint(hu[40:]))  # below the label: HU preserved
    label = restored[:20] != np.rint(hu[:20])
    assert label.sum() > 200, "burned-in label present"
    assert restored[:20][label].max() >= 80  # text brighter than the window top: reads white


def test_synthetic_sc_prefixes_ai(sources: list[Dataset], algorithm: AlgorithmInfo) -> None:
    ds = synthetic_image_sc(sources[0], np.zeros((SIZE, SIZE)), series_uid=generate_uid(), series_number=5,
                            instance_number=1, algorithm=algorithm, description="HARMONIZED")
    assert ds.SeriesDescription == "AI HARMONIZED"


# --- triage SR -------------------------------------------------------------------------------


def test_triage_report(sources: list[Dataset], algorithm: AlgorithmInfo, tmp_path: Path) -> None:
    finding = TriageFinding(
        score=82.5,
        category="critical",
        top_slices=[SliceFinding(sources[1], 91.0, (40, 50, 69, 89)), SliceFinding(sources[2], 55.5)],
    )
    series_uid = generate_uid()
    ds = triage_report(sources, finding, series_uid=series_uid, series_number=903, algorithm=algorithm)
    ds = assert_valid(ds, tmp_path / "sr.dcm")

    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert_same_patient_and_study(ds, sources[0])
    assert ds.SeriesInstanceUID == series_uid != sources[0].SeriesInstanceUID
    assert ds.SeriesDescription.startswith("AI")
    assert ds.Modality == "SR"
    assert ds.VerificationFlag == "UNVERIFIED"
    assert "ContentDate" in ds and "ContentTime" in ds
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"

    items = list(walk(ds.ContentSequence))
    meanings = {i.ConceptNameCodeSequence[0].CodeMeaning for i in items if "ConceptNameCodeSequence" in i}

    def numbers(meaning: str) -> list[float]:
        return [float(i.MeasuredValueSequence[0].NumericValue) for i in items
                if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeMeaning == meaning]

    assert numbers("Anomaly score") == [82.5]
    assert numbers("Slice anomaly score") == [91.0, 55.5]
    units = {i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
             for i in items if i.ValueType == "NUM"}
    assert units == {"{score}"}

    (category,) = [i for i in items if i.ValueType == "CODE"
                   and i.ConceptNameCodeSequence[0].CodeMeaning == "Triage category"]
    assert category.ConceptCodeSequence[0].CodeMeaning == "Critical"
    assert category.ConceptCodeSequence[0].CodingSchemeDesignator == "99DCMNODE"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99DCMNODE"

    texts = {(i.ConceptNameCodeSequence[0].CodeMeaning, i.TextValue) for i in items if i.ValueType == "TEXT"}
    assert ("Algorithm Name", "anomaly_triage") in texts
    assert ("Algorithm Version", "1.0.0") in texts
    assert ("Algorithm Parameters", "critical=70") in texts
    assert ("Device Observer Manufacturer", "dicomnode") in texts
    assert ("Device Observer Model Name", "anomaly_triage") in texts
    observer = [i for i in items if i.ValueType == "CODE"
                and i.ConceptNameCodeSequence[0].CodeMeaning == "Observer Type"]
    assert observer[0].ConceptCodeSequence[0].CodeMeaning == "Device"
    assert "Procedure reported" in meanings

    images = [i for i in items if i.ValueType == "IMAGE"]
    referenced = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images}
    assert referenced == {sources[1].SOPInstanceUID, sources[2].SOPInstanceUID}
    (region,) = [i for i in items if i.ValueType == "SCOORD"]
    assert region.GraphicType == "POLYLINE"
    assert [float(v) for v in region.GraphicData] == [50, 40, 90, 40, 90, 70, 50, 70, 50, 40]
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        sources[1].SOPInstanceUID

    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence} == \
        {s.SOPInstanceUID for s in sources}


def test_triage_report_without_top_slices(sources: list[Dataset], algorithm: AlgorithmInfo,
                                          tmp_path: Path) -> None:
    finding = TriageFinding(score=3.0, category="ROUTINE", top_slices=[])
    ds = triage_report(sources, finding, series_uid=generate_uid(), series_number=903, algorithm=algorithm)
    ds = assert_valid(ds, tmp_path / "sr.dcm")
    codes = [i.ConceptCodeSequence[0].CodeMeaning for i in walk(ds.ContentSequence) if i.ValueType == "CODE"]
    assert "Routine" in codes
    assert "Slice possibly missing" not in codes


def test_triage_report_says_when_a_slice_may_be_missing(sources: list[Dataset], algorithm: AlgorithmInfo,
                                                        tmp_path: Path) -> None:
    finding = TriageFinding(score=3.0, category="routine", slice_possibly_missing=True)
    ds = triage_report(sources, finding, series_uid=generate_uid(), series_number=903, algorithm=algorithm)
    ds = assert_valid(ds, tmp_path / "sr.dcm")
    (item,) = [i for i in walk(ds.ContentSequence) if i.ValueType == "CODE"
               and i.ConceptNameCodeSequence[0].CodeMeaning == "Input series completeness"]
    assert item.ConceptCodeSequence[0].CodeMeaning == "Slice possibly missing"
    assert item.ConceptCodeSequence[0].CodingSchemeDesignator == "99DCMNODE"


@pytest.mark.parametrize(("shift_mm", "value", "side"), [(6.44, 6.4, "Left"), (-2.05, 2.0, "Right"),
                                                         (0.04, 0.0, None), (None, None, None)])
def test_triage_report_carries_the_midline_shift(sources: list[Dataset], algorithm: AlgorithmInfo,
                                                 tmp_path: Path, shift_mm: float | None, value: float | None,
                                                 side: str | None) -> None:
    """Measured, the shift is a NUM in mm of any size with the side it lies towards; a shift
    that rounds to 0.0 has no side; where it was not measured the report leaves it out."""
    finding = TriageFinding(score=30.0, category="routine", midline_shift_mm=shift_mm)
    ds = triage_report(sources, finding, series_uid=generate_uid(), series_number=903, algorithm=algorithm)
    items = list(walk(assert_valid(ds, tmp_path / "sr.dcm").ContentSequence))

    def named(meaning: str) -> list[Dataset]:
        return [i for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == meaning]

    shifts, directions = named("Midline shift"), named("Midline shift direction")
    if value is None:
        assert shifts == []
    else:
        (shift,) = shifts
        assert shift.ValueType == "NUM"
        assert shift.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99DCMNODE"
        assert float(shift.MeasuredValueSequence[0].NumericValue) == value
        assert shift.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"
        assert any(i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Name" for i in walk([shift]))
    if side is None:
        assert directions == []
    else:
        (direction,) = directions
        assert direction.ConceptCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert direction.ConceptCodeSequence[0].CodeMeaning == side
    with pytest.raises(ValueError, match="midline shift"):
        TriageFinding(score=30.0, category="routine", midline_shift_mm=float("nan"))


def test_triage_report_rejects_foreign_slices(sources: list[Dataset], algorithm: AlgorithmInfo,
                                              tmp_path: Path) -> None:
    stranger = pydicom.dcmread(ct_series(tmp_path / "other", 1, rows=SIZE, columns=SIZE)[0])
    finding = TriageFinding(score=50.0, category="urgent", top_slices=[SliceFinding(stranger, 60.0)])
    with pytest.raises(ValueError, match="not among the sources"):
        triage_report(sources, finding, series_uid=generate_uid(), series_number=1, algorithm=algorithm)


def test_results_of_a_source_without_patient_and_study_identity_are_valid(
        sources: list[Dataset], anomaly: np.ndarray, algorithm: AlgorithmInfo, tmp_path: Path) -> None:
    """Type 2 attributes a sender left out are sent empty; the received datasets stay as they came."""
    left_out = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "StudyID", "AccessionNumber", "ReferringPhysicianName")
    for ds in sources:
        for keyword in left_out:
            if keyword in ds:
                delattr(ds, keyword)
    finding = TriageFinding(score=50.0, category="urgent", top_slices=[SliceFinding(sources[1], 60.0)])
    report = triage_report(sources, finding, series_uid=generate_uid(), series_number=903,
                           algorithm=algorithm)
    heatmap_sc = heatmap(sources[1], anomaly, algorithm)
    for name, ds in (("sr", report), ("sc", heatmap_sc)):
        ds = assert_valid(ds, tmp_path / f"{name}.dcm")
        assert ds.PatientID == "" and ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert not any(keyword in ds for ds in sources for keyword in left_out)


def test_finding_validation(sources: list[Dataset]) -> None:
    with pytest.raises(ValueError, match="category"):
        TriageFinding(score=10.0, category="soon")
    with pytest.raises(ValueError, match=r"0\.\.100"):
        TriageFinding(score=120.0, category="urgent")
    with pytest.raises(ValueError, match="outside"):
        SliceFinding(sources[0], 1.0, (0, 0, SIZE, 10))
    with pytest.raises(ValueError, match="outside"):
        SliceFinding(sources[0], 1.0, (5, 0, 4, 10))
    assert SliceFinding(sources[0], 1.0, (3, 4, 3, 4)).region == (3, 4, 3, 4)  # one pixel
    with pytest.raises(ValueError, match="algorithm name"):
        AlgorithmInfo("", "1.0")


# --- building blocks -------------------------------------------------------------------------


def test_labels_render_and_wrap() -> None:
    assert render_line("AI", 1).shape == (7, 11)
    assert render_line("AI", 2).shape == (14, 22)
    assert np.array_equal(glyph("\u2013"), glyph("-"))
    assert np.array_equal(glyph("a"), glyph("A"))
    assert np.array_equal(glyph("\u00e9"), glyph("?"))
    assert not np.array_equal(glyph("O"), glyph("0"))
    assert wrap("AI ANOMALY MAP - NOT FOR DIAGNOSIS", 10) == ["AI ANOMALY", "MAP - NOT", "FOR", "DIAGNOSIS"]
    assert wrap("ABCDEFGHIJKL", 5) == ["ABCDE", "FGHIJ", "KL"]
    assert text_block(["HELLO WORLD"], 40).shape[1] <= 40


def test_burn_in_refuses_labels_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        burn_in(np.zeros((12, 30), dtype=np.uint8), ["A LONG LABEL THAT WRAPS"], foreground=255, background=0)


def test_colormap_and_window() -> None:
    lut = inferno_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    luminance = lut @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) > -1.0), "perceptual map: luminance rises monotonically"
    assert list(window_to_uint8(np.array([0.0, 40.0, 80.0, -500.0, 900.0]), 40, 80)) == [0, 128, 255, 0, 255]


def test_hottest_region(anomaly: np.ndarray) -> None:
    assert hottest_region(anomaly, threshold_hu=20.0, fraction=0.5) == (40, 50, 69, 89)
    assert hottest_region(anomaly, threshold_hu=20.0, fraction=0.9) == (55, 70, 55, 70)
    assert hottest_region(np.zeros((8, 8)), threshold_hu=20.0) is None


def test_heatmap_sc_of_a_tilted_slice_names_the_oblique_directions(
        sources: list[Dataset], anomaly: np.ndarray, algorithm: AlgorithmInfo, tmp_path: Path) -> None:
    source = sources[0]
    tilt = np.deg2rad(20.0)  # gantry tilt: the columns turn from posterior towards the head
    source.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt))]
    ds = assert_valid(heatmap(source, anomaly, algorithm), tmp_path / "sc.dcm")
    assert list(ds.PatientOrientation) == ["L", "PH"]
    source.ImageOrientationPatient = [-1, 0, 0, 0, -0.9999999, 0.0000001]  # rounding, not obliquity
    assert list(heatmap(source, anomaly, algorithm).PatientOrientation) == ["R", "A"]
    source.ImageOrientationPatient = [0.8, -0.6, 0, 0.36, 0.48, -0.8]  # oblique along every axis
    assert list(heatmap(source, anomaly, algorithm).PatientOrientation) == ["LA", "FPL"]
