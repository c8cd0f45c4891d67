"""The anomaly-triage result as a Comprehensive 3D SR following TID 1500 (Measurement Report).

Content tree (one measurement group, TID 1501):

- observer context: the algorithm as a device observer (TID 1004)
- procedure reported: CT of head (SCT 303653007) unless the caller names another
- measurement group, with TID 4019 algorithm identification on the group and on every
  measurement:
  - "Anomaly score" (study, 0-100, UCUM "{score}"), referencing the top slices
  - "Slice anomaly score" per top slice, with the hottest region as a closed POLYLINE on the
    source CT image when the finding has one, else a plain image reference (either names the
    frame where the slice is a frame of an enhanced instance)
  - "Triage category": critical / urgent / routine (qualitative evaluation)
  - "Input series completeness": "Slice possibly missing" (qualitative evaluation), only when
    the series has a gap much wider than the gaps beside it
  - "Midline shift" (mm, UCUM "mm"): how far the septum pellucidum lies from the skull's plane
    of symmetry, whatever its size, and "Midline shift direction": the side of the patient it
    lies towards (SCT Left / Right; left out below 0.05 mm); both only where it was measured

DICOM has no standard concepts for an anomaly score, these triage categories or the midline
shift, so they are coded in the private scheme "99DCMNODE" (declared in CodingSchemeIdentificationSequence);
everything else uses DCM, SCT and UCUM. The report says it is machine-generated through
the device observer, the algorithm identification, VerificationFlag UNVERIFIED and a
SeriesDescription starting with "AI".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from dicomnode.frames import frame_number
from dicomnode.outputs.inputs import AlgorithmInfo, SliceFinding, TriageFinding

logger = logging.getLogger(__name__)

CODING_SCHEME = "99DCMNODE"
ANOMALY_SCORE = Code("DN0001", CODING_SCHEME, "Anomaly score")
SLICE_ANOMALY_SCORE = Code("DN0002", CODING_SCHEME, "Slice anomaly score")
TRIAGE_CATEGORY = Code("DN0003", CODING_SCHEME, "Triage category")
INPUT_COMPLETENESS = Code("DN0004", CODING_SCHEME, "Input series completeness")
SLICE_POSSIBLY_MISSING = Code("DN0201", CODING_SCHEME, "Slice possibly missing")
MIDLINE_SHIFT = Code("DN0005", CODING_SCHEME, "Midline shift")
MIDLINE_SHIFT_DIRECTION = Code("DN0006", CODING_SCHEME, "Midline shift direction")
CATEGORY_CODES = {
    "critical": Code("DN0101", CODING_SCHEME, "Critical"),
    "urgent": Code("DN0102", CODING_SCHEME, "Urgent"),
    "routine": Code("DN0103", CODING_SCHEME, "Routine"),
}
SCORE_UNIT = Code("{score}", "UCUM", "score")
CT_HEAD = codes.SCT.ComputedTomographyOfHead


def triage_report(
    sources: Sequence[Dataset],
    finding: TriageFinding,
    *,
    series_uid: str,
    series_number: int,
    algorithm: AlgorithmInfo,
    instance_number: int = 1,
    procedure: Code = CT_HEAD,
) -> Dataset:
    """Comprehensive 3D SR of `finding` for the study of `sources` (the source CT instances).

    Every top slice must be one of `sources`; all of `sources` are listed as evidence.
    """
    if not sources:
        raise ValueError("a report needs the source instances it describes")
    study_uids = {str(ds.StudyInstanceUID) for ds in sources}
    if len(study_uids) != 1:
        raise ValueError(f"sources span {len(study_uids)} studies; a report covers one")
    known = {str(ds.SOPInstanceUID) for ds in sources}
    for top in finding.top_slices:
        if str(top.source.SOPInstanceUID) not in known:
            raise ValueError(f"top slice {top.source.SOPInstanceUID} is not among the sources")

    algorithm_id = _algorithm_id(algorithm)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid,
            # TID 1004 has no version row: the name carries it, TID 4019 states it properly
            name=algorithm.label,
            manufacturer_name=algorithm.manufacturer,
            model_name=algorithm.name,
        ),
    )
    measurements = [
        hd.sr.Measurement(
            name=ANOMALY_SCORE,
            value=float(finding.score),
            unit=SCORE_UNIT,
            algorithm_id=_algorithm_id(algorithm),
            referenced_images=[_image_for_measurement(top.source) for top in finding.top_slices] or None,
        )
    ]
    measurements += [_slice_measurement(top, algorithm) for top in finding.top_slices]
    evaluations = [hd.sr.QualitativeEvaluation(TRIAGE_CATEGORY, CATEGORY_CODES[finding.category.lower()])]
    if finding.slice_possibly_missing:
        evaluations.append(hd.sr.QualitativeEvaluation(INPUT_COMPLETENESS, SLICE_POSSIBLY_MISSING))
    if finding.midline_shift_mm is not None:
        shift = round(finding.midline_shift_mm, 1)
        measurements.append(hd.sr.Measurement(name=MIDLINE_SHIFT, value=abs(shift),
                                              unit=codes.UCUM.Millimeter,
                                              algorithm_id=_algorithm_id(algorithm)))
        if shift != 0.0:
            side = codes.SCT.Left if shift > 0 else codes.SCT.Right
            evaluations.append(hd.sr.QualitativeEvaluation(MIDLINE_SHIFT_DIRECTION, side))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Anomaly triage"),
        algorithm_id=algorithm_id,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(**_reference(top.source)) for top in finding.top_slices
        ]
        or None,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure,
        imaging_measurements=[group],
    )
    ds: Dataset = hd.sr.Comprehensive3DSR(
        evidence=_evidence(sources),
        content=report,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        series_description=f"AI ANOMALY TRIAGE ({algorithm.label})"[:64],
        is_complete=True,
        is_final=False,
        is_verified=False,
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=CODING_SCHEME,
                name="dicomnode private codes",
                responsible_organization="dicomnode",
            )
        ],
        contributing_equipment=[
            hd.ContributingEquipment(
                manufacturer=algorithm.manufacturer,
                purpose_of_reference=codes.DCM.ProcessingEquipment,
                manufacturer_model_name=algorithm.name,
                software_versions=algorithm.version,
                contribution_description=f"Generated by the {algorithm.name} algorithm",
            )
        ],
    )
    for keyword in ("StudyDescription",):
        if keyword in sources[0]:
            setattr(ds, keyword, sources[0][keyword].value)
    logger.info(
        "triage SR %s built: score %.1f, %s, %d top slice(s)",
        ds.SOPInstanceUID, finding.score, finding.category.lower(), len(finding.top_slices),
    )
    return ds


# Patient and General Study attributes that DICOM requires (Type 2) and highdicom reads from
# the first evidence dataset; a sender may leave them out.
_IDENTITY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                      "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _evidence(sources: Sequence[Dataset]) -> list[Dataset]:
    """Each source instance once (the frames of an enhanced instance are one instance); the first
    with any missing patient and study identity present and empty, as the report carries it."""
    evidence = list({str(ds.SOPInstanceUID): ds for ds in sources}.values())
    missing = [keyword for keyword in _IDENTITY_KEYWORDS if keyword not in evidence[0]]
    if missing:
        first = Dataset()  # the received dataset itself is left as it came
        for element in evidence[0]:
            first.add(element)
        for keyword in missing:
            setattr(first, keyword, None)
        evidence[0] = first
        logger.warning("the source lacks %s: the report carries them empty", ", ".join(missing))
    return evidence


def _algorithm_id(algorithm: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    # A fresh template per use: content items must not be shared between parents.
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=algorithm.parameter_strings() or None,
    )


def _reference(source: Dataset) -> dict[str, Any]:
    """The image a finding lies on: its instance and, for a frame of an enhanced instance, its frame."""
    frame = frame_number(source)
    return {"referenced_sop_class_uid": source.SOPClassUID,
            "referenced_sop_instance_uid": source.SOPInstanceUID,
            "referenced_frame_numbers": None if frame is None else [frame]}


def _image_for_measurement(source: Dataset) -> hd.sr.SourceImageForMeasurement:
    return hd.sr.SourceImageForMeasurement(**_reference(source))


def _slice_measurement(top: SliceFinding, algorithm: AlgorithmInfo) -> hd.sr.Measurement:
    if top.region is None:
        return hd.sr.Measurement(
            name=SLICE_ANOMALY_SCORE,
            value=float(top.score),
            unit=SCORE_UNIT,
            algorithm_id=_algorithm_id(algorithm),
            referenced_images=[_image_for_measurement(top.source)],
        )
    r0, c0, r1, c1 = top.region
    # SCOORD pixel space puts (0, 0) at the outer corner of the first pixel: the outline of
    # pixels r0..r1 (inclusive) runs from r0 to r1 + 1.
    upper, left, lower, right = r0, c0, r1 + 1, c1 + 1
    outline = np.array(
        [[left, upper], [right, upper], [right, lower], [left, lower], [left, upper]], dtype=np.float32
    )
    return hd.sr.Measurement(
        name=SLICE_ANOMALY_SCORE,
        value=float(top.score),
        unit=SCORE_UNIT,
        algorithm_id=_algorithm_id(algorithm),
        referenced_coordinates=[
            hd.sr.CoordinatesForMeasurement(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=outline,
                source_image=hd.sr.SourceImageForRegion(**_reference(top.source)),
            )
        ],
    )
