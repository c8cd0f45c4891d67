"""Whether a series' pixels went through lossy compression, and how hard.

An archive or a teleradiology link may compress CT with loss to save space or time. DICOM asks
whoever does it to record it (Lossy Image Compression "01", with the ratio and the method), and the
flag is never reset once set. A series is taken as lossy where any instance says so, where it is
stored in a transfer syntax that is always lossy (baseline and extended JPEG, near-lossless
JPEG-LS, video), or where a JPEG 2000 codestream was coded with the irreversible (9-7) wavelet,
which some encoders do without setting the flag. The ratio is the recorded one (the product of
its values where the image was compressed more than once); where none is recorded, it is
estimated from the compressed size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    MPEGTransferSyntaxes,
)

# Retired JPEG processes that are lossy, besides baseline (.50) and extended (.51).
_RETIRED_LOSSY_JPEG = {f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 59, 60, 61, 62, 63, 64)}
ALWAYS_LOSSY = {str(JPEGBaseline8Bit), str(JPEGExtended12Bit), str(JPEGLSNearLossless),
                *_RETIRED_LOSSY_JPEG, *(str(uid) for uid in MPEGTransferSyntaxes)}
_METHODS = {str(JPEGBaseline8Bit): "ISO_10918_1", str(JPEGExtended12Bit): "ISO_10918_1",
            str(JPEGLSNearLossless): "ISO_14495_1", str(JPEG2000): "ISO_15444_1",
            str(JPEG2000MC): "ISO_15444_2", str(HTJ2K): "ISO_15444_15"}
# JPEG 2000 syntaxes whose codestream may be reversible or not.
_EITHER_J2K = {str(JPEG2000), str(JPEG2000MC), str(HTJ2K)}
_SOC_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the image and tile size marker
_COD, _SOT = 0xFF52, 0xFF90


@dataclass(frozen=True)
class LossyCompression:
    slices: int  # instances compressed with loss
    instances: int  # instances looked at
    ratio: float | None  # the highest over those slices; None where none was recorded or estimable
    estimated: bool  # the ratio was estimated from the compressed size, not recorded
    methods: tuple[str, ...]  # e.g. ISO_15444_1 (JPEG 2000), as DICOM names them

    def describe(self) -> str:
        """For a reader: which instances, how, and how hard."""
        how = ", ".join(self.methods) if self.methods else "method not recorded"
        if self.ratio is None:
            hard = "ratio not recorded"
        else:
            hard = f"{'about ' if self.estimated else ''}{self.ratio:.0f}:1" + (
                " by the compressed size" if self.estimated else "")
        which = ("every instance" if self.slices == self.instances
                 else f"{self.slices} of {self.instances} instances")
        return f"lossy compressed ({which}; {how}; {hard})"


def lossy_compression(datasets: Sequence[Dataset]) -> LossyCompression | None:
    """How the instances were compressed with loss, or None where none was."""
    lossy, ratios, estimated, methods = 0, [], False, set()
    for ds in datasets:
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        flagged = str(ds.get("LossyImageCompression", "")).strip() == "01"
        frame = _first_frame(ds) if syntax in ALWAYS_LOSSY or syntax in _EITHER_J2K else None
        coded = syntax in ALWAYS_LOSSY or (frame is not None and _irreversible_j2k(frame))
        if not (flagged or coded):
            continue
        lossy += 1
        recorded = _recorded_ratio(ds) if flagged else None
        if recorded is None:
            recorded = _size_ratio(ds, frame) if coded and frame else None
            estimated = estimated or recorded is not None
        if recorded is not None:
            ratios.append(recorded)
        named = [str(m) for m in _values(ds.get("LossyImageCompressionMethod"))]
        methods.update(named or ([_METHODS[syntax]] if syntax in _METHODS else []))
    if not lossy:
        return None
    return LossyCompression(lossy, len(datasets), max(ratios) if ratios else None, estimated,
                            tuple(sorted(methods)))


def _values(element: object) -> list[object]:
    if element is None or element == "":
        return []
    if isinstance(element, Sequence) and not isinstance(element, str | bytes):
        return list(element)
    return [element]


def _recorded_ratio(ds: Dataset) -> float | None:
    """Lossy Image Compression Ratio: one value per compression applied, so their product."""
    try:
        values = [float(str(v)) for v in _values(ds.get("LossyImageCompressionRatio"))]
    except (TypeError, ValueError):
        return None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        return None
    return math.prod(values)


def _first_frame(ds: Dataset) -> bytes | None:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return get_frame(ds.PixelData, 0, number_of_frames=frames)
    except Exception:  # damaged encapsulation: the decoder will say so when it reads the pixels
        return None


def _size_ratio(ds: Dataset, frame: bytes) -> float:
    """The stored size of one frame over its compressed size (`frame`, not empty)."""
    stored = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
    return stored / len(frame)


def _irreversible_j2k(frame: bytes) -> bool:
    """Whether a JPEG 2000 codestream uses the irreversible 9-7 wavelet (its COD marker's
    transformation byte is 0; 1 is the reversible 5-3 of lossless coding)."""
    start = frame.find(_SOC_SIZ)
    if start < 0:
        return False
    at = start + 2
    while at + 4 <= len(frame):
        marker = int.from_bytes(frame[at:at + 2], "big")
        length = int.from_bytes(frame[at + 2:at + 4], "big")
        if marker == _COD:
            return at + 13 < len(frame) and frame[at + 13] == 0
        if marker == _SOT or length < 2:
            return False
        at += 2 + length
    return False
