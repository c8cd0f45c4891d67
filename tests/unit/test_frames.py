"""Enhanced (multi-frame) CT read frame by frame, and results that reference the frames."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from dicomnode.frames import FrameView, frame_number, single_frames
from dicomnode.generators.ct import SeriesRejected, load_ct_volume
from dicomnode.outputs import (
    AlgorithmInfo,
    SliceFinding,
    TriageFinding,
    heatmap_secondary_capture,
    triage_report,
)
from dicomnode.phantoms import enhanced_image
from tests.support.dciodvfy import require_dciodvfy, validate
from tests.support.dcmtk import dcmtk_available, encode
from tests.support.dicomdata import ct_series
from tests.support.require import require
from tests.support.sr import walk

SIZE = 128


@pytest.fixture
def series(tmp_path: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in ct_series(tmp_path, 5, rows=SIZE, columns=SIZE)]


def _reversed_frames(image: Dataset) -> Dataset:
    """The same instance with its frames stored last to first (scanners store either way)."""
    pixels = image.pixel_array[::-1]
    image.PerFrameFunctionalGroupsSequence = list(image.PerFrameFunctionalGroupsSequence)[::-1]
    image.PixelData = np.ascontiguousarray(pixels).tobytes()
    return image


@pytest.mark.parametrize("stored", ["as converted", "reversed"])
def test_an_enhanced_instance_reads_as_the_series_it_holds(series: list[Dataset], stored: str) -> None:
    image = enhanced_image(series)
    if stored == "reversed":
        image = _reversed_frames(image)
    assert image.SOPClassUID.name == "Legacy Converted Enhanced CT Image Storage"
    slices, frames = load_ct_volume(series), load_ct_volume([image])
    np.testing.assert_array_equal(frames.hu, slices.hu)
    assert frames.pixel_spacing == slices.pixel_spacing
    assert frames.slice_spacing == slices.slice_spacing
    assert frames.slice_extents == slices.slice_extents
    heights = [float(groups.PlanePositionSequence[0].ImagePositionPatient[2])
               for groups in image.PerFrameFunctionalGroupsSequence]
    assert [frame_number(ds) for ds in frames.datasets] == sorted(range(1, 6), key=lambda n: heights[n - 1])
    for frame, single in zip(frames.datasets, slices.datasets, strict=True):
        assert isinstance(frame, FrameView) and frame.SOPInstanceUID == image.SOPInstanceUID
        assert frame.ImagePositionPatient == single.ImagePositionPatient


@pytest.mark.parametrize("syntax", ["JPEG Lossless SV1", "JPEG-LS Lossless"])
def test_a_compressed_enhanced_instance_decodes_to_the_same_hu(series: list[Dataset], tmp_path: Path,
                                                              syntax: str) -> None:
    require(dcmtk_available(), "dcmtk is not installed (apt-get install dcmtk)")
    enhanced_image(series).save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    (compressed,) = encode([tmp_path / "enhanced.dcm"], tmp_path / "compressed", syntax)
    image = pydicom.dcmread(compressed)
    assert image.file_meta.TransferSyntaxUID.is_compressed and int(image.NumberOfFrames) == 5
    np.testing.assert_array_equal(load_ct_volume([image]).hu, load_ct_volume(series).hu)


def test_a_frames_own_functional_groups_win_over_the_shared_ones(series: list[Dataset]) -> None:
    image = enhanced_image(series)
    shared = image.SharedFunctionalGroupsSequence[0]
    transformation = shared.PixelValueTransformationSequence
    del shared.PixelValueTransformationSequence
    pixels = image.pixel_array.astype(np.int32)
    for index, groups in enumerate(image.PerFrameFunctionalGroupsSequence):
        item = Dataset()
        item.RescaleSlope, item.RescaleType = transformation[0].RescaleSlope, "HU"
        # the second frame is stored 100 higher, its intercept 100 lower: the same HU
        item.RescaleIntercept = float(transformation[0].RescaleIntercept) - (100 if index == 1 else 0)
        groups.PixelValueTransformationSequence = [item]
    pixels[1] += 100
    image.PixelData = pixels.astype(image.pixel_array.dtype).tobytes()
    np.testing.assert_array_equal(load_ct_volume([image]).hu, load_ct_volume(series).hu)


def test_a_single_frame_instance_is_left_as_it_is(series: list[Dataset]) -> None:
    assert single_frames(series[0]) == [series[0]]
    assert frame_number(series[0]) is None


def _localizer_frame(image: Dataset) -> None:
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]
    image.PerFrameFunctionalGroupsSequence[2].CTImageFrameTypeSequence = [frame_type]


@pytest.mark.parametrize(("change", "reason"), [
    (lambda image: delattr(image, "PerFrameFunctionalGroupsSequence"),
     "5 frames but none per-frame functional"),
    (lambda image: setattr(image, "PixelData", image.PixelData[:100]), "cannot be decoded"),
    (_localizer_frame, "localizer"),
    (lambda image: image.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence[0].__setattr__(
        "ImagePositionPatient", image.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
        .ImagePositionPatient), "same position"),
])
def test_unusable_enhanced_instances_are_rejected_with_a_reason(series: list[Dataset],
                                                               change: Callable[[Dataset], None],
                                                               reason: str) -> None:
    image = enhanced_image(series)
    change(image)
    with pytest.raises(SeriesRejected, match=reason) as raised:
        load_ct_volume([image])
    if "functional" in reason or "decoded" in reason:
        assert str(image.SOPInstanceUID) in str(raised.value)  # the administrator can find it


def test_results_reference_the_frame_they_show(series: list[Dataset], tmp_path: Path) -> None:
    require_dciodvfy()
    image = enhanced_image(series)
    image.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    frames = load_ct_volume([pydicom.dcmread(tmp_path / "enhanced.dcm")]).datasets
    algorithm = AlgorithmInfo("anomaly_triage", "1.0.0")
    anomaly = np.zeros((SIZE, SIZE), dtype=np.float32)
    anomaly[10:20, 10:20] = 50.0
    sc = heatmap_secondary_capture(frames[3], anomaly, series_uid=pydicom.uid.generate_uid(),
                                   series_number=9000, instance_number=1, algorithm=algorithm,
                                   slice_score=1.0)
    sc.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    assert validate(tmp_path / "sc.dcm") == []
    (source,) = sc.SourceImageSequence
    shown, other = frame_number(frames[3]), frame_number(frames[1])
    assert source.ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert int(source.ReferencedFrameNumber) == shown
    assert source.ReferencedSOPClassUID == image.SOPClassUID

    finding = TriageFinding(score=80.0, category="critical", top_slices=[
        SliceFinding(frames[3], 9.0, (10, 10, 19, 19)), SliceFinding(frames[1], 2.0)])
    report = triage_report(frames, finding, series_uid=pydicom.uid.generate_uid(), series_number=9001,
                           algorithm=algorithm)
    report.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert validate(tmp_path / "sr.dcm") == []
    references = {(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
                   int(item.ReferencedSOPSequence[0].ReferencedFrameNumber))
                  for item in walk(report.ContentSequence) if item.ValueType == "IMAGE"}
    assert references == {(image.SOPInstanceUID, shown), (image.SOPInstanceUID, other)}
    (evidence,) = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence] == [image.SOPInstanceUID]
