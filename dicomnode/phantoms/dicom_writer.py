"""Write a phantom study as a CT Image Storage series with the tags a scanner would send.

UIDs come from `pydicom.uid.generate_uid` with entropy derived from the seed and the
study's parameters, so writing the same phantom twice yields the same UIDs (a PACS sees a
resend, not a new study) while different phantoms never collide.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEG2000, UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomnode.phantoms.vendors import VendorProfile, vendor_profile
from dicomnode.phantoms.volume import PhantomStudy

logger = logging.getLogger(__name__)
logging.getLogger("openjpeg.encode").setLevel(logging.WARNING)  # it logs every tile it codes at INFO

IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"
_EPOCH = dt.datetime(2024, 1, 1, 7, 0, 0)


# How a scanner stores the slices of a patient lying each way (PatientPosition): its
# ImageOrientationPatient, and the stored pixels from those of the supine head-first view (the
# patient's anterior at the top, left on the right) in which phantoms are built.
PATIENT_POSITIONS: dict[str, tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]] = {
    "HFS": ((1, 0, 0, 0, 1, 0), lambda supine: supine),
    "HFP": ((-1, 0, 0, 0, -1, 0), lambda supine: supine[::-1, ::-1]),  # prone: face down
    "FFS": ((-1, 0, 0, 0, 1, 0), lambda supine: supine[:, ::-1]),  # seen from the head
    "FFP": ((1, 0, 0, 0, -1, 0), lambda supine: supine[::-1, :]),
    "HFDL": ((0, -1, 0, 1, 0, 0), lambda supine: supine[::-1].T),  # lying on the left side
    "HFDR": ((0, 1, 0, -1, 0, 0), lambda supine: supine[:, ::-1].T),
}


def as_stored(position: str, stack: np.ndarray) -> np.ndarray:
    """(slices, rows, columns) in the supine head-first view -> as stored for `position`."""
    to_stored = PATIENT_POSITIONS[position][1]
    return np.stack([to_stored(image) for image in stack])


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["dicomnode-phantom", *[str(p) for p in parts]]))


def write_series(
    study: PhantomStudy,
    outdir: Path,
    *,
    seed: int | None = None,
    vendor: str | None = None,
    accession: str | None = None,
    position: str = "HFS",
    lossy_ratio: float | None = None,
) -> list[Path]:
    """Write one file per slice into `outdir` (created); returns the paths, slice order.

    `position` is the PatientPosition the slices are stored for (PATIENT_POSITIONS): the
    same head, as a scanner stores it for a patient lying that way.
    `lossy_ratio` stores the pixels JPEG 2000 compressed with loss at about that ratio
    (`compress_lossy`), as an archive that compresses to save space sends them, under UIDs of
    their own: a lossy copy is another image."""
    if lossy_ratio is not None and lossy_ratio <= 1.0:
        raise ValueError(f"lossy compression ratio must be above 1, got {lossy_ratio:g}")
    if position not in PATIENT_POSITIONS:
        choices = ", ".join(PATIENT_POSITIONS)
        raise ValueError(f"unknown patient position {position!r}; choose one of {choices}")
    seed = study.seed if seed is None else seed
    profile = vendor_profile(vendor or study.vendor)
    key: tuple[object, ...] = (seed, study.lesion_kind, study.lesion_size, study.shape, study.spacing,
                               profile.key)
    if position != "HFS":  # the supine head-first series keeps the UIDs it always had
        key = (*key, position)
    if study.gantry_tilt_deg or study.head_pitch_deg:  # another scan of the head: other UIDs
        key = (*key, "tilt", study.gantry_tilt_deg, "pitch", study.head_pitch_deg)
    if study.head_roll_deg or study.head_yaw_deg:
        key = (*key, "roll", study.head_roll_deg, "yaw", study.head_yaw_deg)
    if study.details.get("contrast_hu") is not None:
        key = (*key, "contrast", study.details["contrast_hu"])
    # Another patient's scan where the head holds something else: a coil, older blood.
    if "metal_radius_mm" in study.details:
        key = (*key, "metal")
    if study.details.get("subdural_age", "acute") != "acute":
        key = (*key, "subdural", study.details["subdural_age"])
    if lossy_ratio is not None:
        key = (*key, "lossy", lossy_ratio)
    study_uid = _uid("study", *key)
    series_uid = _uid("series", *key)
    frame_uid = _uid("frame", *key)
    when = _EPOCH + dt.timedelta(days=seed % 700, minutes=(seed * 37) % 600)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    current = int(rng.integers(*profile.tube_current_ma))
    placement = _Placement.of(study, position)
    paths: list[Path] = []
    for k in range(study.shape[0]):
        ds = _slice_dataset(study, profile, k, when, current, placement)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = _uid("instance", *key, k)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = f"PHANTOM^{seed}"
        ds.PatientID = f"PHANTOM-{seed}"
        ds.AccessionNumber = accession or f"PH{seed % 10**8:08d}"
        if lossy_ratio is not None:
            compress_lossy(ds, lossy_ratio)
        path = outdir / f"CT.{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.debug("wrote %d CT instances of phantom series to %s", len(paths), outdir)
    return paths


def compress_lossy(ds: Dataset, ratio: float) -> None:
    """Encode the pixels JPEG 2000 irreversible (9-7 wavelet) at about `ratio`:1 of their stored
    size, and record it as DICOM asks of lossy compression (Lossy Image Compression "01", the
    ratio achieved and the method)."""
    stored = len(ds.PixelData)
    # The encoder's ratio is of the samples' significant bits; ours is of the bytes stored.
    ds.compress(JPEG2000, j2k_cr=[ratio * int(ds.BitsStored) / int(ds.BitsAllocated)])
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{stored / len(ds.PixelData):.2f}"
    ds.LossyImageCompressionMethod = "ISO_15444_1"


def write_enhanced_series(study: PhantomStudy, outdir: Path, **options: Any) -> Path:
    """Write the study as one Legacy Converted Enhanced CT instance, `outdir`/CT.enhanced.dcm.

    The slices `write_series` would write (`options` are its own) are written aside and
    converted by `enhanced_image`; returns the instance's path.
    """
    with tempfile.TemporaryDirectory() as aside:
        paths = write_series(study, Path(aside), **options)
        image = enhanced_image([pydicom.dcmread(path) for path in paths])
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "CT.enhanced.dcm"
    image.save_as(path, enforce_file_format=True)
    return path


def enhanced_image(slices: Sequence[Dataset]) -> Dataset:
    """The slices of one series as one Legacy Converted Enhanced CT instance (PS3.3 A.70).

    What a PACS or scanner that keeps series enhanced sends: one multi-frame instance whose
    functional groups hold each frame's position, spacing and rescale. It keeps the patient,
    the study and the pixels, and takes UIDs of its own derived from the source series'.
    """
    first = slices[0]
    source_series = str(first.SeriesInstanceUID)
    image = LegacyConvertedEnhancedCTImage(
        list(slices), series_instance_uid=_uid("enhanced-series", source_series),
        series_number=int(first.get("SeriesNumber") or 1), sop_instance_uid=_uid("enhanced", source_series),
        instance_number=1)
    if "BodyPartExamined" in first:  # General Series has it; the conversion leaves it out
        image.BodyPartExamined = first.BodyPartExamined
    return image


@dataclass(frozen=True)
class _Placement:
    """Where a series' slices lie in the patient, the same for every slice of it."""

    position: str  # PatientPosition
    orientation: list[str]  # ImageOrientationPatient
    first_pixel: np.ndarray  # LPS offset of the first stored pixel from the study's origin

    @classmethod
    def of(cls, study: PhantomStudy, position: str) -> _Placement:
        # A tilted gantry turns the slice plane about the patient's left-right axis; the table
        # still moves along z. Untilted, this is the identity (and the strings of every earlier
        # series).
        turn = study.plane_turn
        orientation = np.reshape(PATIENT_POSITIONS[position][0], (2, 3))
        to_stored = PATIENT_POSITIONS[position][1]
        # The first stored pixel is the supine view's pixel (row, column) that lands there.
        supine_rows, supine_cols = np.indices(study.shape[1:])
        row, col = int(to_stored(supine_rows)[0, 0]), int(to_stored(supine_cols)[0, 0])
        _, dy, dx = study.spacing
        return cls(position, [f"{v + 0.0:.6g}" for v in (turn @ orientation.T).T.ravel()],
                   turn @ np.array([col * dx, row * dy, 0.0]))


def _slice_dataset(
    study: PhantomStudy, profile: VendorProfile, k: int, when: dt.datetime, current: int,
    placement: _Placement,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    meta.ImplementationVersionName = "DICOMNODE_PH1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = time
    ds.ContentTime = (when + dt.timedelta(seconds=k // 8 + 20)).strftime("%H%M%S")
    ds.Modality = "CT"
    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model
    ds.SoftwareVersions = profile.software_versions
    ds.StationName = profile.station_name
    ds.InstitutionName = "DICOMNODE PHANTOM HOSPITAL"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT HEAD"
    ds.SeriesDescription = profile.series_description
    ds.ProtocolName = profile.protocol_name
    ds.BodyPartExamined = "HEAD"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientAge = "060Y"
    ds.PatientPosition = placement.position
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = k + 1
    ds.ScanOptions = profile.scan_options
    ds.KVP = f"{profile.kvp:g}"
    ds.XRayTubeCurrent = current
    ds.ExposureTime = profile.exposure_time_ms
    ds.Exposure = round(current * profile.exposure_time_ms / 1000)
    ds.FilterType = profile.filter_type
    ds.ConvolutionKernel = profile.convolution_kernel
    ds.GantryDetectorTilt = f"{study.gantry_tilt_deg:g}"
    ds.TableHeight = "150"
    ds.DataCollectionDiameter = "500"
    rows, cols = study.shape[1], study.shape[2]
    dz, dy, dx = study.spacing
    ds.ReconstructionDiameter = f"{dx * cols:.2f}"
    for tag, value in profile.extra.items():
        setattr(ds, tag, value)
    ds.SliceThickness = f"{study.slice_thickness_mm:g}"
    ds.SpacingBetweenSlices = f"{dz:g}"
    z = study.origin[2] + k * study.table_step_mm  # moves with the table
    corner = np.asarray(study.origin) + np.array([0.0, 0.0, k * study.table_step_mm]) + placement.first_pixel
    ds.ImagePositionPatient = [f"{v:.4f}" for v in corner]
    ds.ImageOrientationPatient = placement.orientation
    ds.SliceLocation = f"{z:.4f}"
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    orientation, to_stored = PATIENT_POSITIONS[placement.position]
    transposed = orientation[0] == 0
    ds.Rows, ds.Columns = (cols, rows) if transposed else (rows, cols)
    ds.PixelSpacing = [f"{dx:.6f}", f"{dy:.6f}"] if transposed else [f"{dy:.6f}", f"{dx:.6f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if profile.pixel_representation else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = profile.pixel_representation
    ds.RescaleIntercept = f"{profile.rescale_intercept:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = (
        [f"{c:g}" for c, _ in profile.windows] if len(profile.windows) > 1 else f"{profile.windows[0][0]:g}"
    )
    ds.WindowWidth = (
        [f"{w:g}" for _, w in profile.windows] if len(profile.windows) > 1 else f"{profile.windows[0][1]:g}"
    )
    ds.WindowCenterWidthExplanation = (
        list(profile.window_explanation) if len(profile.windows) > 1 else (profile.window_explanation[0])
    )
    stored = to_stored(study.hu[k]).astype(np.int32) - int(profile.rescale_intercept)
    if profile.pixel_representation:
        pixels = np.clip(stored, -32768, 32767).astype(np.int16)
    else:
        pixels = np.clip(stored, 0, 4095).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    ds.BurnedInAnnotation = "NO"
    ds.PatientComments = "Synthetic phantom - NOT FOR DIAGNOSIS"
    return ds
