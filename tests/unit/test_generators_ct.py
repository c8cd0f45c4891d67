"""CT preparation: what a generator accepts, and the clear reasons for what it refuses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless
from scipy import ndimage

from dicomnode.generators.ct import (
    CtVolume,
    InPlaneTurn,
    SeriesRejected,
    bone_beside,
    bone_beside_reach,
    brain_mask,
    enhanced,
    head_window,
    image_noise_hu,
    intracranial_metal,
    load_ct_volume,
    quieter_slabs,
    resample_slices,
    running_slabs,
    same_slabs,
)
from dicomnode.net.scp import TRANSFER_SYNTAXES
from tests.support.dcmtk import ENCODERS, dcmtk_available, encode
from tests.support.dicomdata import ct_series
from tests.support.require import require


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
    np.testing.assert_allclose(volume.slice_voxel_ml(), 0.5 * 0.5 * 5 / 1000)


def _at_heights(series: list[Dataset], heights: list[float]) -> list[Dataset]:
    for ds, z in zip(series, heights, strict=True):
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z]
    return series


def test_each_slice_counts_its_share_of_the_coverage(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # Thinner slices at the skull base, thicker above: a protocol, not a fault.
    mixed = [pydicom.dcmread(p) for p in ct_series(tmp_path / "mixed", 7, rows=32, columns=32)]
    with caplog.at_level("WARNING"):
        volume = load_ct_volume(_at_heights(mixed, [0, 2.5, 5, 7.5, 12.5, 17.5, 22.5]))
    np.testing.assert_allclose(volume.slice_extents, [2.5, 2.5, 2.5, 3.75, 5, 5, 5])
    np.testing.assert_allclose(volume.slice_voxel_ml(), np.asarray(volume.slice_extents) * 0.25 / 1000)
    assert caplog.records == []
    # A slice lost on the way: its neighbours cover the gap, and the log says where it is.
    gap = [pydicom.dcmread(p) for p in ct_series(tmp_path / "gap", 6, rows=32, columns=32)]
    with caplog.at_level("WARNING"):
        volume = load_ct_volume(_at_heights(gap, [0, 5, 10, 20, 25, 30]))
    np.testing.assert_allclose(volume.slice_extents, [5, 5, 7.5, 7.5, 5, 5])
    assert volume.slice_spacing == pytest.approx(5.0)
    assert ["a gap of 10.00 mm between slices at 10.00 and 20.00 mm" in r.getMessage()
            for r in caplog.records] == [True]
    assert volume.suspected_gaps == ((10.0, 20.0),)
    assert load_ct_volume(_at_heights(mixed, [0, 2.5, 5, 7.5, 12.5, 17.5, 22.5])).suspected_gaps == ()


@pytest.mark.parametrize("syntax", sorted(ENCODERS))
def test_compressed_series_decode_to_the_same_hu(tmp_path: Path, syntax: str) -> None:
    """Scanners and PACS send CT compressed; a generator must see exactly the stored HU."""
    require(dcmtk_available(), "dcmtk is not installed (apt-get install dcmtk)")
    files = ct_series(tmp_path / "raw", 4, rows=48, columns=40)
    compressed = encode(files, tmp_path / "compressed", syntax)
    assert pydicom.dcmread(compressed[0]).file_meta.TransferSyntaxUID.is_compressed
    expected = load_ct_volume([pydicom.dcmread(p) for p in files]).hu
    np.testing.assert_array_equal(load_ct_volume([pydicom.dcmread(p) for p in compressed]).hu, expected)


def test_every_accepted_transfer_syntax_can_be_decoded() -> None:
    """What the listener accepts, a generator can read (decoders are runtime dependencies)."""
    missing = [uid.name for uid in TRANSFER_SYNTAXES if not get_decoder(uid).is_available]
    assert missing == []


def test_jpeg_2000_series_decode_to_the_same_hu(series: list[Dataset]) -> None:
    expected = load_ct_volume(series).hu
    for ds in series:
        ds.compress(JPEG2000Lossless)
    np.testing.assert_array_equal(load_ct_volume(series).hu, expected)


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
        (lambda s: delattr(s[2], "RescaleIntercept"), "1 slice\\(s\\) lack RescaleIntercept"),
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
    mask = brain_mask(image[None], (1.0, 1.0))[0]
    assert mask[48, 48]
    assert not mask[48, 48 + 37]  # bone
    assert not mask[0, 0]  # air
    assert mask.sum() > 0.6 * np.pi * 34**2


def test_brain_mask_keeps_a_thin_collection_against_the_skull_at_any_matrix() -> None:
    """A 2 mm layer of blood inside the inner table is in the mask at 1 mm and 0.5 mm pixels."""
    for pixel_mm in (1.0, 0.5):
        n = round(96 / pixel_mm)
        yy, xx = np.mgrid[:n, :n] * pixel_mm
        radius = np.hypot(yy - 48, xx - 48)
        image = np.full((n, n), -1000.0)
        image[radius < 40] = 1000.0  # bone
        image[radius < 34] = 65.0  # subdural blood, 2 mm thick
        image[radius < 32] = 35.0  # brain
        mask = brain_mask(image[None], (pixel_mm, pixel_mm))[0]
        blood = (radius < 34) & (radius >= 32)
        assert mask[blood].mean() > 0.4, pixel_mm
        assert not mask[(radius >= 34)].any()


def test_bone_beside_marks_the_slices_next_to_bone_not_the_bone_slice() -> None:
    hu = np.full((5, 8, 8), 35.0)
    hu[2, 3:5, 3:5] = 900.0
    for thickness in (5.0, 2.5, 2.0):  # the next slice only
        beside = bone_beside(hu, thickness)
        assert beside[1, 3:5, 3:5].all() and beside[3, 3:5, 3:5].all()
        assert beside.sum() == 8  # the 2x2 patch in the slice above and the one below, nothing else
    assert not bone_beside(np.full((1, 8, 8), 900.0), 1.0).any()  # a single slice has no neighbours


def test_bone_beside_reaches_3_mm_in_a_thin_series() -> None:
    hu = np.full((11, 8, 8), 35.0)
    hu[5, 3:5, 3:5] = 900.0
    marked = np.flatnonzero(bone_beside(hu, 1.0).any(axis=(1, 2)))
    assert marked.tolist() == [2, 3, 4, 6, 7, 8]  # 1-3 mm away; 4 mm is not
    marked = np.flatnonzero(bone_beside(hu, 0.625).any(axis=(1, 2)))
    assert marked.tolist() == [1, 2, 3, 4, 6, 7, 8, 9]  # up to 2.5 mm


def test_resample_keeps_shape_contract() -> None:
    stack = np.random.default_rng(0).normal(size=(3, 64, 48)).astype(np.float32)
    assert resample_slices(stack, (32, 32)).shape == (3, 32, 32)
    assert resample_slices(stack, (64, 48)) is not None


def _brain_mask_slice_by_slice(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """The mask's definition, one slice at a time with scipy's own morphology."""

    from scipy.spatial import Delaunay

    margin = max(1, round(0.9 / min(pixel_spacing)))
    mask = np.zeros(hu.shape, dtype=bool)
    closed_slices = {i: ndimage.binary_closing(image > 300.0, structure=np.ones((5, 5)), iterations=2)
                     for i, image in enumerate(hu) if (image > 300.0).sum() >= 50}
    filled = {i: ndimage.binary_fill_holes(closed) for i, closed in closed_slices.items()}
    enclosed = {i: int((filled[i] & ~closed).sum()) for i, closed in closed_slices.items()}
    largest = max(enclosed.values(), default=0)
    cm2 = pixel_spacing[0] * pixel_spacing[1] / 100.0
    grid = np.argwhere(np.ones(hu.shape[1:], dtype=bool))
    for i, closed in closed_slices.items():
        inside = filled[i]
        points = np.argwhere(closed)
        if len(points) >= 3 and np.ptp(points[:, 0]) > 0 and np.ptp(points[:, 1]) > 0:
            # The convex hull, here from a Delaunay triangulation, where the ring is open.
            hull = (Delaunay(points).find_simplex(grid, tol=1e-9) >= 0).reshape(closed.shape)
            interior = int((hull & ~closed).sum())
            if enclosed[i] < 0.1 * interior and interior * cm2 >= 20.0 and interior >= 0.6 * largest:
                inside = hull
        inside = inside & ~ndimage.binary_dilation(closed, iterations=margin)
        mask[i] = ndimage.binary_opening(inside & (hu[i] > -15) & (hu[i] < 120), iterations=2)
    return mask


def test_brain_mask_equals_its_slice_by_slice_definition() -> None:
    from dicomnode.phantoms import make_study

    study = make_study(3, "sdh", slice_thickness_mm=5.0, coverage_mm=60.0, matrix=256, lesion_size="small")
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 400.0, (4, 64, 80))  # bone and holes everywhere, also at the edges
    shifted = np.roll(study.hu, 90, axis=2)  # the skull cut by the image edge
    edge_bone = np.full((2, 40, 40), 35.0)
    edge_bone[:, :3] = 1000.0  # bone along one edge only: nothing closed
    edge_bone[1] = 35.0  # and a slice without bone
    for hu, spacing in [(study.hu, (0.9, 0.9)), (shifted, (0.45, 0.45)), (noise, (0.5, 0.5)),
                        (edge_bone, (1.0, 1.0))]:
        assert np.array_equal(brain_mask(hu, spacing), _brain_mask_slice_by_slice(hu, spacing))


@pytest.mark.parametrize("source, target", [((64, 48), (32, 24)), ((32, 24), (64, 48)), ((5, 3), (10, 6)),
                                            ((64, 48), (40, 30))])
def test_resample_gives_the_values_of_a_linear_zoom(source: tuple[int, int], target: tuple[int, int]) -> None:

    # 37 slices: more than two chunks of the fast paths, the last one partial
    stack = np.random.default_rng(0).normal(30.0, 300.0, size=(37, *source)).astype(np.float32)
    factors = (1.0, target[0] / source[0], target[1] / source[1])
    zoomed = ndimage.zoom(stack, factors, order=1, grid_mode=True, mode="nearest")
    zoomed = zoomed[:, : target[0], : target[1]]
    assert np.array_equal(resample_slices(stack, target), zoomed.astype(np.float32))


@pytest.mark.parametrize(("orientation", "expected"), [
    ([1, 0, 0, 0, 1, 0], InPlaneTurn()),  # supine, head first
    ([1, 0, 0, 0, 0.940, -0.342], InPlaneTurn()),  # 20 degrees of gantry tilt
    ([-1, 0, 0, 0, -1, 0], InPlaneTurn(flip_rows=True, flip_columns=True)),  # prone
    ([-1, 0, 0, 0, 1, 0], InPlaneTurn(flip_columns=True)),  # feet first, left on the left
    ([0, -1, 0, 1, 0, 0], InPlaneTurn(transpose=True, flip_rows=True)),  # decubitus
])
def test_the_turn_to_the_supine_view_is_read_from_the_orientation(
        series: list[Dataset], orientation: list[float], expected: InPlaneTurn) -> None:
    for ds in series:
        ds.ImageOrientationPatient = orientation
    volume = load_ct_volume(series)
    assert volume.turn == expected
    assert np.array_equal(volume.turn.undo(volume.turn.apply(volume.hu)), volume.hu)


def test_the_head_window_keeps_the_skull_within_the_widest_field_of_view() -> None:
    hu = np.full((3, 80, 120), -1000.0, dtype=np.float32)  # 1 mm pixels: 80 x 120 mm
    yy, xx = np.mgrid[:80, :120]
    hu[1][np.abs(np.hypot(yy - 30, xx - 85) - 18) < 2] = 1000.0  # a skull off to one side
    rows, cols = head_window(hu, (1.0, 1.0), 60.0)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (60, 60)
    assert (hu[:, rows, cols] > 300).sum() == (hu > 300).sum() > 0  # all the bone is inside
    assert cols.start > 30  # moved towards the skull, not the image centre
    assert head_window(hu, (1.0, 1.0), 120.0) == (slice(None), slice(None))
    assert head_window(hu, (0.5, 0.5), 60.0) == (slice(None), slice(None))  # 40 x 60 mm
    air = np.full((1, 80, 120), -1000.0, dtype=np.float32)
    assert head_window(air, (1.0, 1.0), 60.0) == (slice(10, 70), slice(30, 90))  # no bone: the centre


def test_the_head_window_centres_on_the_skull_not_a_dense_table_beside_it() -> None:
    hu = np.full((3, 120, 120), -1000.0, dtype=np.float32)  # 1 mm pixels: 120 x 120 mm
    yy, xx = np.mgrid[:120, :120]
    for z, radius in enumerate((10, 18, 14)):  # the skull, high in the image: seen from above, a disc
        hu[z][np.abs(np.hypot(yy - 40, xx - 60) - radius) < 2.5] = 1000.0
    skull_only = head_window(hu, (1.0, 1.0), 60.0)
    hu[:, 100:104, :] = 900.0  # a table denser than bone, across the whole width below the head
    hu[0, 70:73, 100:103] = 2000.0  # and a metal clip
    rows, cols = head_window(hu, (1.0, 1.0), 60.0)
    assert (rows, cols) == skull_only
    assert (hu[:, rows, cols] == 1000.0).sum() == (hu == 1000.0).sum()  # all the skull inside


def _skull_ring_heads(slices: int, noise_hu: float, seed: int = 0) -> np.ndarray:
    """A stack of skull rings around 35 HU brain (0.5 mm pixels), with white noise."""
    yy, xx = np.mgrid[:160, :160]
    radius = np.hypot(yy - 80, xx - 80)
    image = np.full((160, 160), -1000.0)
    image[radius < 70] = 1000.0
    image[radius < 62] = 35.0
    noise = np.random.default_rng(seed).normal(0.0, noise_hu, (slices, 160, 160)) if noise_hu else 0.0
    return np.asarray(image[None] + noise, dtype=np.float32)


@pytest.mark.parametrize("noise_hu", [4.0, 10.0, 20.0])
def test_image_noise_reads_the_noise_of_the_brain(noise_hu: float) -> None:
    estimate = image_noise_hu(_skull_ring_heads(30, noise_hu), (0.5, 0.5))
    assert estimate is not None and abs(estimate - noise_hu) < 0.05 * noise_hu
    high = image_noise_hu(_skull_ring_heads(30, 40.0), (0.5, 0.5))  # reads low, still far above limits
    assert high is not None and 30.0 < high < 40.0
    flat = image_noise_hu(_skull_ring_heads(30, 0.0), (0.5, 0.5))
    assert flat is not None and flat < 0.5


def test_image_noise_reads_the_middle_of_the_series() -> None:
    heads = _skull_ring_heads(40, 5.0)
    heads[:8] = -1000.0  # below the head: air, as the first slices of a scan may be
    heads[-8:] = np.random.default_rng(1).normal(35.0, 60.0, (8, 160, 160))  # what it must not read
    estimate = image_noise_hu(heads, (0.5, 0.5))
    assert estimate is not None and abs(estimate - 5.0) < 0.5


def test_a_bone_kernel_leaves_no_brain_to_read() -> None:
    # Noise of a sharp kernel at thin slices: no pixel stays within the brain's density range.
    assert image_noise_hu(_skull_ring_heads(12, 150.0), (0.5, 0.5)) is None
    assert image_noise_hu(np.full((12, 64, 64), -1000.0, dtype=np.float32), (0.5, 0.5)) is None


def _volume(hu: np.ndarray, spacing: float, positions: list[float] | None = None,
            thickness: float | None = None) -> CtVolume:
    source = Dataset()
    if thickness is not None:
        source.SliceThickness = thickness
    return CtVolume(np.asarray(hu, dtype=np.float32), [source] * len(hu), (0.5, 0.5), spacing,
                    positions=tuple(positions) if positions is not None else ())


def test_running_slabs_average_the_slices_around_each_one() -> None:
    hu = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4))
    slabbed = running_slabs(_volume(hu, 1.0, [0, 1, 2, 3, 4, 5, 6]), 1)
    # Three slices each, fewer at the ends; positions, datasets and shape kept.
    np.testing.assert_allclose(slabbed.hu[:, 0, 0], [0.5, 1, 2, 3, 4, 5, 5.5])
    assert slabbed.slab_mm == 3.0 and slabbed.hu.shape == hu.shape
    assert slabbed.positions == (0, 1, 2, 3, 4, 5, 6)
    # A slab is a length: across a gap (a missing slice) it holds fewer slices.
    gapped = running_slabs(_volume(hu, 1.0, [0, 1, 2, 3, 6, 7, 8]), 1)
    np.testing.assert_allclose(gapped.hu[:, 0, 0], [0.5, 1, 2, 2.5, 4.5, 5, 5.5])
    # Slices thicker than their spacing (overlapping) make the slab thicker.
    assert running_slabs(_volume(hu, 0.5, thickness=1.0), 2).slab_mm == 3.0


def test_quieter_slabs_pick_the_thinnest_slab_that_reaches_the_noise() -> None:
    # 0.625 mm slices with 20 HU of noise independent from slice to slice: five slices (3.1 mm)
    # bring it to 20 / sqrt(5) = 8.9 HU, three (1.9 mm) only to 11.5.
    choice = quieter_slabs(_volume(_skull_ring_heads(40, 20.0), 0.625, thickness=0.625), 10.0)
    assert choice is not None and choice.volume.slab_mm == pytest.approx(3.125)
    assert 8.0 < choice.noise_hu <= 10.0
    measured = image_noise_hu(choice.volume.hu, choice.volume.pixel_spacing)
    assert measured == pytest.approx(choice.noise_hu, rel=0.05)
    # Out of reach within 5 mm: the thickest slab allowed (seven slices, 4.4 mm), noise above target.
    loud = quieter_slabs(_volume(_skull_ring_heads(40, 40.0), 0.625, thickness=0.625), 10.0)
    assert loud is not None and loud.volume.slab_mm == pytest.approx(4.375) and loud.noise_hu > 10.0
    # Slices too thick for a slab of three within 5 mm are left alone.
    assert quieter_slabs(_volume(_skull_ring_heads(12, 20.0), 2.5, thickness=2.5), 10.0) is None


def test_quieter_slabs_measure_overlapping_slices_rather_than_assume() -> None:
    # 1.25 mm slices every 0.625 mm share half their noise with each neighbour: averaging
    # quietens less (seven slices: 18 HU to 9.3, not 6.8), and a thicker slab is needed than
    # for independent slices of the same noise (five: 8.0).
    white = np.random.default_rng(3).normal(0.0, 18.0, (41, 160, 160))
    shared = _skull_ring_heads(40, 0.0) + (white[1:] + white[:-1]) / np.sqrt(2.0)
    overlapping = quieter_slabs(_volume(shared, 0.625, thickness=1.25), 10.0)
    apart = quieter_slabs(_volume(_skull_ring_heads(40, 18.0), 0.625, thickness=0.625), 10.0)
    assert overlapping is not None and apart is not None
    assert overlapping.noise_hu <= 10.0 and overlapping.volume.slab_mm == pytest.approx(5.0)
    assert apart.noise_hu <= 10.0 and apart.volume.slab_mm == pytest.approx(3.125)


def test_bone_beside_reaches_a_whole_slab() -> None:
    assert bone_beside_reach(0.625) == 4  # 3 mm
    assert bone_beside_reach(0.625, slab_mm=4.375) == 7  # every slab that shares a slice
    assert bone_beside_reach(5.0, slab_mm=0.0) == 1


def test_same_slabs_average_another_volume_as_the_series_was() -> None:
    hu = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4))
    plain = _volume(hu, 1.0, [0, 1, 2, 3, 4])
    assert same_slabs(plain, hu * 2) is not None and np.array_equal(same_slabs(plain, hu * 2), hu * 2)
    slabbed = running_slabs(plain, 1)
    np.testing.assert_allclose(same_slabs(slabbed, hu * 2), slabbed.hu * 2)


def _enhanced_ml(volume: CtVolume) -> float:
    found = enhanced(volume)
    return found.right_ml + found.left_ml


def _noiseless_heads(slices: int) -> np.ndarray:
    return np.repeat(_skull_ring_heads(1, 0.0), slices, axis=0)


def _vessels(heads: np.ndarray, hu: float, radius_px: float = 2.0) -> np.ndarray:
    """Round vessels of `hu` scattered through the brain of every slice (0.5 mm pixels)."""
    yy, xx = np.mgrid[:160, :160]
    out = heads.copy()
    for cy, cx in ((50, 50), (50, 110), (110, 50), (110, 110), (80, 60), (80, 100)):
        out[:, np.hypot(yy - cy, xx - cx) < radius_px] = hu
    return out


def test_enhancement_measures_vessels_denser_than_blood_and_less_dense_than_bone() -> None:
    heads = _skull_ring_heads(10, 5.0)
    volume = _volume(_vessels(heads, 200.0), 5.0)
    # Six vessels of 9 pixels of 0.25 mm2 on ten 5 mm slices; the first and last slices have no
    # bone beside them here, so every slice counts.
    expected = 6 * 9 * 0.25 * 5.0 * 10 / 1000.0
    assert _enhanced_ml(volume) == pytest.approx(expected)
    assert _enhanced_ml(_volume(heads, 5.0)) == 0.0
    # Blood, however dense, is not contrast; nor is a vessel thinner than the slice that
    # partial volume brings under 130 HU.
    assert _enhanced_ml(_volume(_vessels(heads, 100.0), 5.0)) == 0.0
    assert _enhanced_ml(_volume(_vessels(heads, 125.0), 5.0)) == 0.0


def test_enhancement_leaves_out_bone_and_what_lies_beside_it() -> None:
    heads = _noiseless_heads(10)
    yy, xx = np.mgrid[:160, :160]
    radius = np.hypot(yy - 80, xx - 80)
    # The inner table's partial-volume rim (200 HU, one pixel inside the bone).
    rimmed = heads.copy()
    rimmed[:, (radius >= 61) & (radius < 62)] = 200.0
    assert _enhanced_ml(_volume(rimmed, 5.0)) == 0.0
    # A calcification dense enough to be bone, with a 200 HU rim a pixel wide.
    calcified = heads.copy()
    calcified[:, np.hypot(yy - 80, xx - 80) < 4] = 200.0
    calcified[:, np.hypot(yy - 80, xx - 80) < 3] = 800.0
    assert _enhanced_ml(_volume(calcified, 5.0)) == 0.0
    # A slice holding a sliver of the bone that the next slice shows (the vertex, cut obliquely).
    sliver = heads.copy()
    sliver[4, np.hypot(yy - 80, xx - 80) < 20] = 250.0
    sliver[5, np.hypot(yy - 80, xx - 80) < 20] = 1000.0
    assert _enhanced_ml(_volume(sliver, 5.0)) == 0.0


def test_enhancement_reads_the_slices_above_the_skull_base() -> None:
    # Slices whose inside of the skull is under half the widest (the skull base) are not read:
    # there the slices cut bone in every direction.
    heads = _vessels(_noiseless_heads(10), 200.0)
    yy, xx = np.mgrid[:160, :160]
    small = np.full((160, 160), -1000.0)
    small[np.hypot(yy - 80, xx - 80) < 40] = 1000.0
    small[np.hypot(yy - 80, xx - 80) < 34] = 35.0
    small[np.hypot(yy - 80, xx - 70) < 2] = 200.0
    heads[:3] = small
    full = _enhanced_ml(_volume(_vessels(_noiseless_heads(10), 200.0), 5.0))
    assert _enhanced_ml(_volume(heads, 5.0)) == pytest.approx(full * 7 / 10, rel=0.01)


def test_enhancement_is_split_between_the_patients_right_and_left() -> None:
    heads = _noiseless_heads(10)
    yy, xx = np.mgrid[:160, :160]
    one_side = heads.copy()
    for cy in (50, 80, 110):
        one_side[:, np.hypot(yy - cy, xx - 50) < 2] = 200.0  # image left: the patient's right
    found = enhanced(_volume(one_side, 5.0))
    assert found.right_ml == pytest.approx(3 * 9 * 0.25 * 5.0 * 10 / 1000.0) and found.left_ml == 0.0
    assert found.bilateral_ml == 0.0  # a catheter or a calcified mass, not contrast
    # A prone patient's slices arrive with left and right swapped: the sides follow the patient.
    prone = replace(_volume(one_side, 5.0), turn=InPlaneTurn(flip_rows=True, flip_columns=True))
    assert enhanced(prone).left_ml == pytest.approx(found.right_ml) and enhanced(prone).right_ml == 0.0
    both = enhanced(_volume(_vessels(heads, 200.0), 5.0))
    assert both.right_ml == pytest.approx(both.left_ml) and both.bilateral_ml == pytest.approx(
        both.right_ml + both.left_ml)


def test_metal_is_found_inside_the_skull_not_on_it_or_beside_it() -> None:
    heads = _noiseless_heads(10)
    yy, xx = np.mgrid[:160, :160]
    radius = np.hypot(yy - 80, xx - 80)
    coil = np.hypot(yy - 90, xx - 70) < 3
    coiled = heads.copy()
    coiled[4:6, coil] = 3071.0
    found = intracranial_metal(_volume(coiled, 5.0))
    assert np.flatnonzero(found).tolist() == [4, 5]
    assert found.sum() == pytest.approx(2 * coil.sum() * 0.25 * 5.0 / 1000.0)
    # A plate on the skull, a filling or an earring beside it, bone however dense: no metal inside.
    plate = heads.copy()
    plate[:, (radius >= 64) & (radius < 70) & (xx > 120)] = 3071.0
    beside = heads.copy()
    beside[:, np.hypot(yy - 80, xx - 154) < 3] = 3071.0
    dense = heads.copy()
    dense[:, coil] = 2400.0
    for hu in (plate, beside, dense, heads):
        assert not intracranial_metal(_volume(hu, 5.0)).any()


def _ring(gap_px: int = 0) -> np.ndarray:
    """A skull ring (0.5 mm pixels) around 35 HU brain, with a gap of `gap_px` pixels cut
    through it on the right of the image (a burr hole, a craniotomy)."""
    yy, xx = np.mgrid[:160, :160]
    radius = np.hypot(yy - 80, xx - 80)
    image = np.full((160, 160), -1000.0, dtype=np.float32)
    image[radius < 70] = 1000.0
    image[radius < 62] = 35.0
    if gap_px:
        image[(np.abs(yy - 80) < gap_px / 2) & (xx > 130)] = np.where(radius < 62, 35.0, 40.0)[
            (np.abs(yy - 80) < gap_px / 2) & (xx > 130)]
    return image[None]


@pytest.mark.parametrize("gap_mm", [15.0, 40.0])
def test_the_brain_under_an_open_skull_is_still_masked(gap_mm: float) -> None:
    intact = brain_mask(_ring(), (0.5, 0.5))
    opened = brain_mask(_ring(round(gap_mm / 0.5)), (0.5, 0.5))
    # The brain is masked up to the chord across the gap (a wide defect leaves out the little
    # beyond it); the gap's scalp-like tissue inside the chord joins the mask.
    assert intact.sum() > 10_000
    assert (opened & intact).sum() > 0.99 * intact.sum()
    assert opened.sum() < 1.05 * intact.sum()


def test_an_open_ring_is_filled_only_where_bone_encloses_almost_nothing() -> None:
    yy, xx = np.mgrid[:160, :160]
    cranium = _ring()[0]
    # Two compartments that bone encloses beside open bone (the skull base): as enclosed.
    base = np.full((160, 160), 35.0, dtype=np.float32)
    for cx in (45, 115):
        r = np.hypot(yy - 80, xx - cx)
        base[(r < 30) & (r > 25)] = 1000.0
    base[20:24, 10:150] = 1000.0
    # The jaw's arc under the skull base: open, but small beside the cranium.
    jaw = np.full((160, 160), 35.0, dtype=np.float32)
    arc = np.hypot(yy - 60, xx - 80)
    jaw[(arc < 45) & (arc > 40) & (yy > 60)] = 1000.0
    # The vertex, cut along the skull: a cap too small to tell (under 20 cm2).
    cap = np.full((160, 160), 35.0, dtype=np.float32)
    cap[(np.hypot(yy - 80, xx - 80) < 20) & ((np.hypot(yy - 80, xx - 80) >= 15) | (xx < 80))] = 1000.0
    stack = np.stack([cranium, base, jaw, cap])
    found = brain_mask(stack, (1.0, 1.0))  # a 160 mm field of view
    assert found[0].sum() > 10_000  # 120 cm2
    assert not found[2].any()  # the jaw's hull would hold 32 cm2 of "brain"
    np.testing.assert_array_equal(found, _brain_mask_slice_by_slice(stack, (1.0, 1.0)))
    # Alone, with no cranium above it, the jaw's arc is the largest section: filled.
    assert brain_mask(jaw[None], (1.0, 1.0)).any()
