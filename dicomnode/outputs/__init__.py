"""DICOM objects that go back to the PACS, built with highdicom from arrays and source datasets."""

from dicomnode.outputs.heatmap import hottest_region
from dicomnode.outputs.inputs import TRIAGE_CATEGORIES, AlgorithmInfo, SliceFinding, TriageFinding
from dicomnode.outputs.secondary_capture import (
    HEATMAP_LABEL,
    SYNTHETIC_LABEL,
    heatmap_secondary_capture,
    synthetic_image_sc,
)
from dicomnode.outputs.structured_report import triage_report

__all__ = [
    "HEATMAP_LABEL",
    "SYNTHETIC_LABEL",
    "TRIAGE_CATEGORIES",
    "AlgorithmInfo",
    "SliceFinding",
    "TriageFinding",
    "heatmap_secondary_capture",
    "hottest_region",
    "synthetic_image_sc",
    "triage_report",
]
