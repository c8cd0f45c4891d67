"""Secondary Capture images that go back to the PACS: heat-map overlays and synthetic images.

Every image joins the source's patient and study in a new series, names the algorithm in
ContributingEquipmentSequence and SeriesDescription (which starts with "AI"), carries a
burned-in "NOT FOR DIAGNOSIS" label and BurnedInAnnotation YES, and references its source
slice in SourceImageSequence (with its frame number where the slice is a frame of an enhanced
instance).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_modality_lut
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DS

from dicomnode.compression import lossy_compression
from dicomnode.frames import frame_number
from dicomnode.outputs.heatmap import overlay, window_to_uint8
from dicomnode.outputs.inputs import AlgorithmInfo
from dicomnode.outputs.labels import burn_in

logger = logging.getLogger(__name__)

HEATMAP_LABEL = "AI ANOMALY MAP \u2013 NOT FOR DIAGNOSIS"
SYNTHETIC_LABEL = "SYNTHETIC \u2013 NOT FOR DIAGNOSIS"
BRAIN_WINDOW = (40.0, 80.0)  # (center, width) in HU

# Stored = HU + 1024 as unsigned 16 bit: air (-1024 HU) is 0 and everything CT shows fits.
_HU_OFFSET = 1024

# Patient letters of a direction along each axis: (letter for +, letter for -) per x, y, z.
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))
OBLIQUE_MIN = 1e-3  # direction cosine below which a direction has no part along an axis


def heatmap_secondary_capture(
    source: Dataset,
    anomaly_hu: npt.ArrayLike,
    *,
    series_uid: str,
    series_number: int,
    instance_number: int,
    algorithm: AlgorithmInfo,
    slice_score: float,
    window: tuple[float, float] = BRAIN_WINDOW,
    threshold_hu: float = 20.0,
    max_hu: float = 100.0,
    body_part: str | None = None,
) -> Dataset:
    """RGB Secondary Capture of `source` in `window` (center, width) with the anomaly map overlaid.

    `anomaly_hu` is the HU difference to the pseudo-healthy slice (rows x cols, >= 0 where
    anomalous, already masked to the brain); values below `threshold_hu` stay transparent
    and the colour scale saturates at `max_hu`. `body_part` is the BodyPartExamined of the
    image when the source has none (BodyPartExamined is optional in CT, but without it or a
    laterality the image's Laterality would be required and unknown).
    """
    anomaly = np.asarray(anomaly_hu, dtype=np.float32)
    hu = source_hu(source)
    if anomaly.shape != hu.shape:
        raise ValueError(f"anomaly map {anomaly.shape} does not match the source image {hu.shape}")
    center, width = window
    rgb = overlay(window_to_uint8(hu, center, width), anomaly, threshold_hu=threshold_hu, max_hu=max_hu)
    rgb = burn_in(rgb, [HEATMAP_LABEL], foreground=(255, 255, 255), background=(0, 0, 0))
    rgb = burn_in(
        rgb, [f"SLICE SCORE {slice_score:.1f}"], foreground=(255, 255, 0), background=(0, 0, 0),
        corner="bottom-left",
    )
    description = (
        f"Anomaly map of {algorithm.label}: HU difference to a pseudo-healthy reconstruction, "
        f"shown from {threshold_hu:g} HU (saturating at {max_hu:g} HU) over window "
        f"W{width:g}/L{center:g}; slice score {slice_score:.1f}. Not for diagnosis."
    )
    ds = _secondary_capture(
        source,
        rgb,
        "RGB",
        series_uid=series_uid,
        series_number=series_number,
        instance_number=instance_number,
        algorithm=algorithm,
        series_description=f"AI ANOMALY MAP ({algorithm.label})"[:64],
        purpose=codes.DCM.ProcessingEquipment,
        conversion_type="WSD",
        derivation_description=description,
        body_part=body_part,
    )
    logger.debug("heat-map SC %s built for slice %s", ds.SOPInstanceUID, source.get("InstanceNumber", "?"))
    return ds


def synthetic_image_sc(
    source: Dataset,
    hu: npt.ArrayLike,
    *,
    series_uid: str,
    series_number: int,
    instance_number: int,
    algorithm: AlgorithmInfo,
    description: str,
    window: tuple[float, float] | None = None,
    label: str = SYNTHETIC_LABEL,
) -> Dataset:
    """MONOCHROME2 16-bit Secondary Capture of a synthetic HU image derived from `source`.

    `description` becomes the SeriesDescription, prefixed with "AI " unless it already starts
    so. The window defaults to the source's first VOI window, else the brain window.
    """
    values = np.asarray(hu, dtype=np.float64)
    if values.shape != (int(source.Rows), int(source.Columns)):
        raise ValueError(f"image {values.shape} does not match the source ({source.Rows}, {source.Columns})")
    center, width = window or _source_window(source)
    stored = np.clip(np.rint(np.nan_to_num(values, nan=-_HU_OFFSET)) + _HU_OFFSET, 0, 65535).astype(np.uint16)
    # The label is at least as bright as anything in the image and above the window top, so it
    # reads white in the stored window and under min/max auto-windowing; its box is air (black).
    window_top = int(np.clip(center + width / 2 + _HU_OFFSET, 0, 65535))
    stored = burn_in(stored, [label], foreground=max(int(stored.max()), window_top), background=0)
    if not f"{description.upper()} ".startswith("AI "):
        description = f"AI {description}"
    ds = _secondary_capture(
        source,
        stored,
        "MONOCHROME2",
        series_uid=series_uid,
        series_number=series_number,
        instance_number=instance_number,
        algorithm=algorithm,
        series_description=description[:64],
        purpose=codes.DCM.SynthesizingEquipment,
        conversion_type="SYN",
        derivation_description=f"Synthetic image generated by {algorithm.label}. Not for diagnosis.",
    )
    # Modality and VOI LUT modules let viewers show true HU and open in a sensible window.
    ds.RescaleIntercept = -_HU_OFFSET
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = DS(center, auto_format=True)
    ds.WindowWidth = DS(width, auto_format=True)
    logger.debug("synthetic SC %s built for slice %s", ds.SOPInstanceUID, source.get("InstanceNumber", "?"))
    return ds


def source_hu(source: Dataset) -> npt.NDArray[np.float64]:
    """The source slice's pixels in HU (its modality LUT applied)."""
    return np.asarray(apply_modality_lut(source.pixel_array, source), dtype=np.float64)


def patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """Row and column directions as patient letters (e.g. ('L', 'P') for axial), or None.

    An oblique direction names every axis it has a part along, the largest first (PS3.3
    C.7.6.1.1.1): the columns of a slice tilted 20 degrees run "PH", posterior and towards the
    head. Parts under OBLIQUE_MIN are rounding in the stored cosines, not obliquity.
    """
    iop = source.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        orientation = source.get("PatientOrientation")
        if orientation is not None and len(orientation) == 2:
            return (str(orientation[0]), str(orientation[1]))
        return None
    cosines = np.asarray([float(v) for v in iop]).reshape(2, 3)
    row, column = (_direction_letters(vector) for vector in cosines)
    return (row, column)


def _direction_letters(vector: npt.NDArray[np.float64]) -> str:
    letters = ""
    for axis in np.argsort(-np.abs(vector), kind="stable"):
        if letters and abs(vector[axis]) < OBLIQUE_MIN:
            break
        positive, negative = _AXIS_LETTERS[axis]
        letters += positive if vector[axis] > 0 else negative
    return letters


def _source_window(source: Dataset) -> tuple[float, float]:
    values = []
    for keyword in ("WindowCenter", "WindowWidth"):
        value = source.get(keyword)
        if isinstance(value, MultiValue):  # several windows: the first is the default one
            value = value[0] if len(value) else None
        if value is None or value == "":
            return BRAIN_WINDOW
        values.append(float(value))
    center, width = values
    return (center, width) if width > 0 else BRAIN_WINDOW


def _keep_lossy_record(source: Dataset, ds: Dataset) -> None:
    """An image made from lossy compressed pixels says so too: once set, Lossy Image Compression
    "01" is never reset (PS3.3 C.7.6.1.1.5). The source's own record is kept where it has one."""
    lossy = lossy_compression([source])
    if lossy is None:
        return
    ds.LossyImageCompression = "01"
    if "LossyImageCompressionRatio" in source and "LossyImageCompressionMethod" in source:
        ds.LossyImageCompressionRatio = source.LossyImageCompressionRatio
        ds.LossyImageCompressionMethod = source.LossyImageCompressionMethod
    elif lossy.ratio is not None and len(lossy.methods) == 1:
        ds.LossyImageCompressionRatio = DS(lossy.ratio, auto_format=True)
        ds.LossyImageCompressionMethod = lossy.methods[0]


def _secondary_capture(
    source: Dataset,
    pixels: npt.NDArray[Any],
    photometric: str,
    *,
    series_uid: str,
    series_number: int,
    instance_number: int,
    algorithm: AlgorithmInfo,
    series_description: str,
    purpose: Code,
    conversion_type: str,
    derivation_description: str,
    body_part: str | None = None,
) -> Dataset:
    orientation = patient_orientation(source)
    equipment = hd.ContributingEquipment(
        manufacturer=algorithm.manufacturer,
        purpose_of_reference=purpose,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        contribution_datetime=datetime.datetime.now(),
        contribution_description=f"Generated by the {algorithm.name} algorithm",
    )
    pixel_spacing = source.get("PixelSpacing")
    ds: Dataset = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=photometric,
        bits_allocated=8 if pixels.dtype == np.uint8 else 16,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        series_description=series_description,
        # highdicom insists on one letter per direction; the letters of an oblique direction (or
        # the empty Type 2 value) replace it below
        patient_orientation=(orientation[0][0], orientation[1][0]) if orientation else ("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[equipment],
    )
    ds.PatientOrientation = list(orientation) if orientation else None
    if pixel_spacing is not None and len(pixel_spacing) == 2:
        ds.PixelSpacing = [DS(float(v), auto_format=True) for v in pixel_spacing]
    ds.ConversionType = conversion_type
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "NO"
    ds.DerivationDescription = derivation_description[:1024]
    _keep_lossy_record(source, ds)
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if (frame := frame_number(source)) is not None:  # a frame of an enhanced instance
        reference.ReferencedFrameNumber = frame
    reference.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    ds.SourceImageSequence = [reference]
    for keyword in ("StudyDescription", "BodyPartExamined", "ImageLaterality"):
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    if "ImageLaterality" not in ds and source.get("FrameLaterality"):  # a frame of an enhanced image
        ds.ImageLaterality = source.FrameLaterality
    if not ds.get("BodyPartExamined") and body_part:
        ds.BodyPartExamined = body_part
    return ds
