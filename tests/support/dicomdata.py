"""Synthetic DICOM series for tests and benchmarks: valid CT Image Storage instances."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_series(
    folder: Path,
    count: int,
    *,
    rows: int = 64,
    columns: int = 64,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "HEAD NON-CONTRAST",
    body_part: str = "HEAD",
    modality: str = "CT",
    slice_thickness: float = 5.0,
    images_in_acquisition: int | None = None,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    seed: int = 0,
) -> list[Path]:
    """Write `count` axial slices of one series into `folder`; returns the file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    now = datetime.datetime.now()
    paths = []
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = "ACC0001"
        ds.Modality = modality
        ds.Manufacturer = "TestVendor"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT HEAD"
        ds.SeriesDescription = series_description
        ds.PatientName = "Test^Patient"
        ds.PatientID = "TEST0001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = body_part
        ds.SliceThickness = slice_thickness
        ds.KVP = 120
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = i + 1
        if images_in_acquisition is not None:
            ds.ImagesInAcquisition = images_in_acquisition
        ds.ImagePositionPatient = [-0.5 * columns, -0.5 * rows, i * slice_thickness]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = i * slice_thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = [0.5, 0.5]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 80
        pixels = rng.integers(0, 2000, size=(rows, columns), dtype=np.int16)
        ds.PixelData = pixels.tobytes()
        path = folder / f"ct{i + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
