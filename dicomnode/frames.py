"""Multi-frame (enhanced) images seen as single-frame ones: one view per frame.

Enhanced CT, and the Legacy Converted Enhanced CT that a PACS may make of a classic series,
store a whole series in one instance. What single-frame CT keeps in each slice's own
attributes (position, orientation, pixel spacing, thickness, rescale, window, frame type) lives
there in functional groups (PS3.3 C.7.6.16): one item shared by every frame, and one per frame.
A `FrameView` lifts the frame's groups to the places single-frame CT keeps them and holds the
frame's pixels uncompressed, so the code that reads slices reads frames alike. It keeps the
instance's SOP Class and Instance UIDs; results reference a frame with its `frame_number`
(Referenced Frame Number, 1-based).
"""

from __future__ import annotations

import copy

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.errors import DicomNodeError

# Top-level attributes a frame view does not carry over: the frames themselves and the
# attributes that describe them as a set.
_NOT_CARRIED = {Tag(keyword) for keyword in (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "NumberOfFrames",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "FrameIncrementPointer",
    "DimensionOrganizationSequence", "DimensionIndexSequence", "DimensionOrganizationType",
)}


class FrameError(DicomNodeError):
    """A multi-frame instance cannot be seen as frames; the message names the instance and why."""


class FrameView(Dataset):
    """One frame of a multi-frame instance, with the instance's UIDs and the frame's attributes."""

    def __init__(self, frame_number: int) -> None:
        super().__init__()
        self.frame_number = frame_number


def frame_number(ds: Dataset) -> int | None:
    """The frame a dataset stands for (1-based), or None for a whole single-frame instance."""
    return ds.frame_number if isinstance(ds, FrameView) else None


def is_multi_frame(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames") or 1) > 1


def single_frames(ds: Dataset) -> list[Dataset]:
    """`ds` itself when it holds one frame, else one `FrameView` per frame, in stored order."""
    if not is_multi_frame(ds):
        return [ds]
    uid = ds.get("SOPInstanceUID", "?")
    count = int(ds.get("NumberOfFrames") or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != count:
        found = "none" if per_frame is None else str(len(per_frame))
        raise FrameError(f"multi-frame instance {uid} has {count} frames but {found} per-frame functional "
                         "group items (PS3.3 C.7.6.16): where each frame lies is unknown")
    shared = ds.get("SharedFunctionalGroupsSequence") or [Dataset()]
    views: list[Dataset] = []
    for index in range(count):
        view = FrameView(index + 1)
        view.file_meta = FileMetaDataset()
        view.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        for element in ds:
            if element.tag not in _NOT_CARRIED:
                view.add(copy.copy(element))
        for groups in (shared[0], per_frame[index]):  # a frame's own groups win over shared ones
            _lift(groups, view)
        if "FrameType" in view:  # LOCALIZER and the like are stated per frame
            view.ImageType = view.FrameType
        view.PixelData = _frame_pixels(ds, index).tobytes()
        views.append(view)
    return views


def _frame_pixels(ds: Dataset, index: int) -> np.ndarray:
    """One frame, decoded on its own (the instance keeps no decoded copy of all its frames)."""
    uid = ds.get("SOPInstanceUID", "?")
    try:
        pixels, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=index)
    except Exception as exc:  # a codec that is not installed, or damaged pixel data
        raise FrameError(f"pixel data of multi-frame instance {uid} cannot be decoded: {exc}") from exc
    if pixels.shape != (int(ds.Rows), int(ds.Columns)):
        raise FrameError(f"multi-frame instance {uid}: frame {index + 1} is {pixels.shape}, not "
                         f"{ds.Rows}x{ds.Columns} with one sample per pixel")
    return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))


def _lift(groups: Dataset, view: Dataset) -> None:
    """Put the attributes of each functional group macro (a sequence of one item) at top level."""
    for group in groups:
        if group.VR != "SQ" or len(group.value) == 0:
            continue
        for element in group.value[0]:
            if element.VR != "SQ":
                view.add(copy.deepcopy(element))
