"""Comparing DICOM files as bytes."""

from __future__ import annotations

import io

from pydicom.filereader import _read_file_meta_info, read_preamble


def dataset_bytes(part10: bytes) -> bytes:
    """The encoded data set of a Part 10 file, without preamble and file meta.

    A receiver writes its own file meta (source AE, implementation UID), so forwarding is
    byte-identical when the data sets are.
    """
    fp = io.BytesIO(part10)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    return part10[fp.tell():]
