"""What the output builders are given: the algorithm's identity and the triage findings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.uid import generate_uid

TRIAGE_CATEGORIES = ("critical", "urgent", "routine")


@dataclass(frozen=True)
class AlgorithmInfo:
    """The generator that produced a result; it is named in every object that goes back."""

    name: str
    version: str
    manufacturer: str = "dicomnode"
    parameters: dict[str, str] | None = None

    def __post_init__(self) -> None:
        named = (("name", self.name), ("version", self.version), ("manufacturer", self.manufacturer))
        for label, value in named:
            # LO values: at most 64 characters, no backslash (it separates values)
            if not value or len(value) > 64 or "\\" in value:
                raise ValueError(f"algorithm {label} must be 1-64 characters without '\\': {value!r}")

    @property
    def label(self) -> str:
        """'name version', as shown in series descriptions."""
        return f"{self.name} {self.version}"

    @property
    def device_uid(self) -> str:
        """A UID stable for one algorithm version, so reports of one device observer group together."""
        sources = ["dicomnode-device", self.manufacturer, self.name, self.version]
        return str(generate_uid(entropy_srcs=sources))

    def parameter_strings(self) -> list[str]:
        """Parameters as 'key=value' strings, sorted for reproducible output."""
        return [f"{key}={value}" for key, value in sorted((self.parameters or {}).items())]


@dataclass(frozen=True)
class SliceFinding:
    """One of the most anomalous slices.

    `region` is the hottest area as (row0, col0, row1, col1): the pixel indices of its first
    and last rows and columns, both included (a single pixel is (r, c, r, c)), or None.
    """

    source: Dataset
    score: float
    region: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.score):
            raise ValueError("slice score must be finite")
        if self.region is not None:
            r0, c0, r1, c1 = self.region
            rows, columns = int(self.source.Rows), int(self.source.Columns)
            if not (0 <= r0 <= r1 < rows and 0 <= c0 <= c1 < columns):
                raise ValueError(f"region {self.region} is outside a {rows}x{columns} image")


@dataclass(frozen=True)
class TriageFinding:
    """The study-level result of anomaly triage: score 0-100, category, and the top slices."""

    score: float
    category: str
    top_slices: list[SliceFinding] = field(default_factory=list)
    # The series looks like it lost a slice (a gap much wider than its neighbours').
    slice_possibly_missing: bool = False
    # The septum pellucidum's offset from the skull's midline (mm, + to the patient's left);
    # None where it could not be measured.
    midline_shift_mm: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 100.0):
            raise ValueError(f"study score must lie in 0..100, got {self.score}")
        if self.category.lower() not in TRIAGE_CATEGORIES:
            raise ValueError(f"category must be one of {TRIAGE_CATEGORIES}, got {self.category!r}")
        if self.midline_shift_mm is not None and not math.isfinite(self.midline_shift_mm):
            raise ValueError("midline shift must be finite or None")
