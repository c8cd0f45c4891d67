"""What every generator gives the node: DICOM objects to send, and a triage summary if any."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom import Dataset


@dataclass(frozen=True)
class TriageSummary:
    """What the triage worklist shows for a study."""

    score: float
    category: str
    top_slice_sop_uid: str | None
    top_slice_index: int | None
    # The frame of a multi-frame (enhanced) instance that holds the top slice (1-based), else None.
    top_slice_frame_number: int | None = None
    thumbnail_png: bytes | None = None
    # What the reader should know about the input (a slice that may be missing), in words.
    warnings: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratorOutput:
    objects: list[Dataset]
    triage: TriageSummary | None = None


class Generator(Protocol):
    name: str

    def run(self, datasets: Sequence[Dataset], params: Mapping[str, Any]) -> GeneratorOutput:
        """Process one complete series (full datasets, pixel data included)."""
        ...
