"""Lossy compression read from a series' headers and codestreams (dicomnode.compression)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000, JPEG2000Lossless

from dicomnode.compression import lossy_compression

pytest.importorskip("nilearn")

from dicomnode.phantoms import PhantomStudy, make_study, write_series

_LOSSY_RECORD = ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")


@pytest.fixture(scope="module")
def study() -> PhantomStudy:
    return make_study(41, None, slice_thickness_mm=5.0, matrix=256, coverage_mm=20.0)


def _written(study: PhantomStudy, folder: Path, ratio: float | None = None) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in write_series(study, folder, lossy_ratio=ratio)]


def _unrecorded(datasets: list[Dataset]) -> list[Dataset]:
    for ds in datasets:
        for keyword in _LOSSY_RECORD:
            if keyword in ds:
                delattr(ds, keyword)
    return datasets


def test_lossless_series_are_not_lossy(study: PhantomStudy, tmp_path: Path) -> None:
    plain = _written(study, tmp_path / "plain")
    assert lossy_compression(plain) is None
    # JPEG 2000 coded reversibly, labelled with the transfer syntax that also allows loss, as
    # some archives do.
    for ds in plain:
        ds.compress(JPEG2000Lossless)
        ds.file_meta.TransferSyntaxUID = JPEG2000
    assert lossy_compression(plain) is None


def test_a_lossy_series_is_read_with_its_recorded_ratio_and_method(study: PhantomStudy,
                                                                    tmp_path: Path) -> None:
    lossy = lossy_compression(_written(study, tmp_path, 12.0))
    assert lossy is not None
    assert lossy.slices == lossy.instances == study.shape[0]
    assert lossy.ratio is not None and 11.0 <= lossy.ratio <= 14.0
    assert not lossy.estimated and lossy.methods == ("ISO_15444_1",)
    assert lossy.describe() == f"lossy compressed (every instance; ISO_15444_1; {lossy.ratio:.0f}:1)"


def test_an_unrecorded_lossy_codestream_is_found_and_its_ratio_estimated(study: PhantomStudy,
                                                                         tmp_path: Path) -> None:
    # An encoder that leaves Lossy Image Compression out: the irreversible wavelet gives it away.
    lossy = lossy_compression(_unrecorded(_written(study, tmp_path, 12.0)))
    assert lossy is not None and lossy.estimated
    assert lossy.ratio is not None and 11.0 <= lossy.ratio <= 14.0
    assert lossy.describe().endswith(f"ISO_15444_1; about {lossy.ratio:.0f}:1 by the compressed size)")


def test_part_of_a_series_compressed_with_loss_is_named(study: PhantomStudy, tmp_path: Path) -> None:
    plain = _written(study, tmp_path / "plain")
    lossy = _written(study, tmp_path / "lossy", 30.0)
    mixed = lossy_compression([lossy[0], *plain[1:]])
    assert mixed is not None and mixed.slices == 1 and mixed.instances == len(plain)
    assert mixed.describe().startswith(f"lossy compressed (1 of {len(plain)} instances; ISO_15444_1;")


def test_lossy_jpeg_is_lossy_whatever_its_headers_say() -> None:
    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))  # JPEG extended (process 2 and 4)
    assert lossy_compression([ds]) is not None
    (unrecorded,) = _unrecorded([ds])
    lossy = lossy_compression([unrecorded])
    assert lossy is not None and lossy.estimated and lossy.methods == ("ISO_10918_1",)


def test_a_ratio_compressed_twice_is_the_product() -> None:
    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    ds.LossyImageCompressionRatio = ["4", "5"]
    ds.LossyImageCompressionMethod = ["ISO_10918_1", "ISO_10918_1"]
    lossy = lossy_compression([ds])
    assert lossy is not None and lossy.ratio == pytest.approx(20.0) and not lossy.estimated
    # Flagged but with neither ratio nor a codestream to measure: said so.
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    del ds.LossyImageCompressionRatio
    flagged = lossy_compression([ds])
    assert flagged is not None and flagged.ratio is None
    assert flagged.describe() == "lossy compressed (every instance; ISO_10918_1; ratio not recorded)"
