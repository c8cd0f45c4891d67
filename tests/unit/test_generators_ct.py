"""CT preparation: what a generator accepts, and the clear reasons for what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from dicomnode.generators.ct import SeriesRejected, brain_mask, load_ct_volume, resample_slices
from tests.support.dicomdata import ct_series


@pytest.fixture
def series(tmp_path: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in ct_series(tmp_path, 5, rows=32, columns=32)]


def test_slices_are_sorted_by_position_and_converted_to_hu(series: list[Dataset]) -> None:
    shuffled = [series[i] for i in (3, 0, 4, 1, 2)]
    volume = load_ct_volume(shuffled)
    assert [ds.InstanceNumber for ds in volume.datasets] == [1, 2, 3, 4, 5]
    expected = series[0].pixel_array.astype(np.float32) - 1024
    np.testing.assert_array_equal(volume.hu[0], expected)
    assert volume.slice_spacing == pytest.approx(5.0)
    assert volume.voxel_ml == pytest.approx(0.5 * 0.5 * 5 / 1000)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: setattr(s[0], "Modality", "MR"), "not a CT series"),
        (lambda s: delattr(s[1], "PixelData"), "have no pixel data"),
        (lambda s: setattr(s[2], "ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"]), "localizer"),
        (lambda s: [setattr(d, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1]) for d in s],
         "not an axial series"),
        (lambda s: setattr(s[1], "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]), "different orientations"),
        (lambda s: setattr(s[1], "ImagePositionPatient", s[0].ImagePositionPatient), "same position"),
        (lambda s: [delattr(d, "PixelSpacing") for d in s], "PixelSpacing"),
        (lambda s: s.__delitem__(slice(1, None)), "at least 3"),
    ],
)
def test_unsuitable_series_are_rejected_with_a_reason(series: list[Dataset], change: object,
                                                      reason: str) -> None:
    change(series)  # type: ignore[operator]
    with pytest.raises(SeriesRejected, match=reason):
        load_ct_volume(series)


def test_mixed_sizes_are_rejected(tmp_path: Path) -> None:
    small = [pydicom.dcmread(p) for p in ct_series(tmp_path / "a", 3, rows=32, columns=32)]
    large = pydicom.dcmread(ct_series(tmp_path / "b", 1, rows=64, columns=64)[0])
    large.ImagePositionPatient = [-16, -16, 100]
    with pytest.raises(SeriesRejected, match="different sizes"):
        load_ct_volume([*small, large])


def test_brain_mask_finds_the_inside_of_a_skull_ring() -> None:
    yy, xx = np.mgrid[:96, :96]
    radius = np.hypot(yy - 48, xx - 48)
    image = np.full((96, 96), -1000.0)
    image[radius < 40] = 1000.0  # bone
    image[radius < 34] = 35.0  # brain
    mask = brain_mask(image[None])[0]
    assert mask[48, 48]
    assert not mask[48, 48 + 37]  # bone
    assert not mask[0, 0]  # air
    assert mask.sum() > 0.6 * np.pi * 34**2


def test_resample_keeps_shape_contract() -> None:
    stack = np.random.default_rng(0).normal(size=(3, 64, 48)).astype(np.float32)
    assert resample_slices(stack, (32, 32)).shape == (3, 32, 32)
    assert resample_slices(stack, (64, 48)) is not None
