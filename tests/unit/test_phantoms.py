"""Synthetic head CT phantoms: anatomy, lesions, determinism and the DICOM series they write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nilearn")
pytest.importorskip("scipy")

import pydicom
from pydicom.pixels import apply_rescale
from pydicom.uid import JPEG2000
from scipy import ndimage

from dicomnode.phantoms import (
    LESION_KINDS,
    SIZE_CLASS_ML,
    UNSEEN_VENDORS,
    VENDORS,
    PhantomStudy,
    make_pair,
    make_study,
    write_series,
)
from dicomnode.phantoms.anatomy import hu_volume, random_tissues
from dicomnode.phantoms.commands import cmd_phantom
from dicomnode.phantoms.template import load_anatomy
from tests.support.dciodvfy import require_dciodvfy, validate


@pytest.fixture(scope="module")
def healthy() -> object:
    return make_study(11, None, slice_thickness_mm=5.0, matrix=256)


def test_study_shapes_and_geometry(healthy: object) -> None:
    from dicomnode.phantoms import PhantomStudy

    assert isinstance(healthy, PhantomStudy)
    assert healthy.hu.dtype == np.int16
    assert healthy.hu.shape == (32, 256, 256)
    assert healthy.lesion_mask.dtype == bool and healthy.lesion_mask.shape == healthy.hu.shape
    assert healthy.brain_mask.dtype == bool and healthy.brain_mask.shape == healthy.hu.shape
    assert not healthy.lesion_mask.any()
    assert healthy.lesion_kind is None and healthy.lesion_volume_ml == 0.0
    dz, dy, dx = healthy.spacing
    assert dz == 5.0 and dy == dx
    assert 220 / 256 <= dx <= 270 / 256
    # An adult intracranial volume; the MNI152 template is larger than the average head.
    icv_ml = healthy.brain_mask.sum() * dz * dy * dx / 1000.0
    assert 1000.0 < icv_ml < 2400.0


def test_matrix_512_has_half_millimetre_pixels() -> None:
    study, _ = make_pair(3, None, slice_thickness_mm=5.0, matrix=512, healthy_twin=False, slices=[16])
    assert study.hu.shape == (1, 512, 512)
    assert 0.4 <= study.spacing[1] <= 0.6


def test_output_hu_ranges(healthy: object) -> None:
    hu = healthy.hu.astype(np.float32)
    corners = np.concatenate([hu[:, :8, :8].ravel(), hu[:, -8:, -8:].ravel()])
    assert corners.mean() < -950
    brain = hu[healthy.brain_mask]
    assert 20.0 < float(np.median(brain)) < 45.0
    assert hu.max() > 700  # cortical bone survives blur and partial volume
    assert 700 < np.percentile(hu[~healthy.brain_mask & (hu > 300)], 90) < 2000


def test_tissue_hu_ranges_on_the_template() -> None:
    anatomy = load_anatomy()
    for seed in range(3):
        tissues = random_tissues(np.random.default_rng(seed))
        hu = hu_volume(anatomy, tissues)
        sd, gm, wm = anatomy.sd, anatomy.gm, anatomy.wm
        deep = sd < -4.0
        assert 25.0 <= np.median(hu[deep & (wm > 0.97)]) <= 32.0
        assert 35.0 <= np.median(hu[deep & (gm > 0.95)]) <= 45.0
        assert 0.0 <= np.median(hu[deep & (gm + wm < 0.02)]) <= 15.0
        assert 700.0 <= np.median(hu[(sd > 0.3) & (sd < 1.0)]) <= 1800.0  # inner table
        scalp = (sd > tissues.skull_mm + 1.5) & (sd < tissues.skull_mm + tissues.scalp_mm - 2.0)
        assert 20.0 <= np.median(hu[scalp]) <= 60.0
        assert np.all(hu[sd > 40.0] == -1000.0)


_SIZES = ("small", "medium", "large", "medium", "small", "large")


@pytest.mark.parametrize(("kind", "size"), list(zip(LESION_KINDS, _SIZES, strict=True)))
def test_each_lesion_kind_has_a_mask_of_its_size_inside_the_head(kind: str, size: str) -> None:
    study, twin = make_pair(21, kind, slice_thickness_mm=5.0, matrix=256, lesion_size=size, slices="lesion")
    assert twin is not None
    mask = study.lesion_mask
    assert mask.any(), f"{kind}: empty lesion mask"
    assert study.lesion_kind == kind and study.lesion_size == size
    low, high = SIZE_CLASS_ML[size]
    assert low <= study.lesion_volume_ml <= high, f"{kind} {size}: {study.lesion_volume_ml:.2f} ml"
    # Inside the head: nearly all of it within the intracranial space.
    assert (mask & study.brain_mask).sum() >= 0.8 * mask.sum()
    change = float((study.hu[mask].astype(np.float32) - twin[mask]).mean())
    if kind == "infarct":
        assert change < -5.0
    elif kind == "mass":
        assert float(np.abs(study.hu[mask].astype(np.float32) - twin[mask]).mean()) > 3.0
    else:
        assert change > 8.0, f"{kind}: blood should be hyperdense, mean change {change:.1f} HU"
    # Away from the lesion (its partial-volume edge, oedema and kernel blur) the twin is the
    # same image, noise included; a mass also pushes the brain, so only outside the skull there.
    near = ndimage.maximum_filter(mask, size=(3, 25, 25))
    far = ~study.brain_mask if kind == "mass" else ~near
    differs = study.hu[far] != twin[far]
    assert differs.mean() < 0.002, f"{kind}: {differs.sum()} voxels changed away from the lesion"


def test_unknown_lesion_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown lesion kind"):
        make_study(1, "tumour", matrix=256)


def test_same_seed_same_study_and_healthy_twin() -> None:
    a, _ = make_pair(5, "ich", slice_thickness_mm=5.0, matrix=256, healthy_twin=False, slices=[14, 15, 16])
    b, twin = make_pair(5, "ich", slice_thickness_mm=5.0, matrix=256, slices=[14, 15, 16])
    c, _ = make_pair(6, "ich", slice_thickness_mm=5.0, matrix=256, healthy_twin=False, slices=[14, 15, 16])
    plain, _ = make_pair(5, None, slice_thickness_mm=5.0, matrix=256, healthy_twin=False, slices=[14, 15, 16])
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.lesion_mask, b.lesion_mask)
    assert not np.array_equal(a.hu, c.hu)
    # The same seed without a lesion is the lesioned study's healthy twin, noise included.
    assert twin is not None and np.array_equal(plain.hu, twin)


def test_write_series_is_a_consistent_ct_series(tmp_path: Path) -> None:
    study = make_study(8, "sdh", slice_thickness_mm=5.0, matrix=256, vendor="ge")
    paths = write_series(study, tmp_path / "a", seed=8)
    assert len(paths) == study.shape[0]
    datasets = [pydicom.dcmread(p) for p in paths]
    first = datasets[0]
    assert first.SOPClassUID == pydicom.uid.CTImageStorage
    assert first.Modality == "CT" and first.BodyPartExamined == "HEAD"
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert "HEAD" in first.SeriesDescription.upper()
    assert first.PatientName == "PHANTOM^8"
    assert first.Manufacturer == VENDORS["ge"].manufacturer
    assert first.ConvolutionKernel == VENDORS["ge"].convolution_kernel
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), float(first.SliceThickness))
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert np.allclose([float(v) for v in first.PixelSpacing], study.spacing[1:])
    for k, ds in enumerate(datasets):
        assert ds.InstanceNumber == k + 1
        assert np.array_equal(apply_rescale(ds.pixel_array, ds), study.hu[k])
    again = [pydicom.dcmread(p) for p in write_series(study, tmp_path / "b", seed=8)]
    assert [d.SOPInstanceUID for d in again] == [d.SOPInstanceUID for d in datasets]
    assert again[0].StudyInstanceUID == first.StudyInstanceUID


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR"])
def test_each_patient_position_stores_the_same_head_where_its_orientation_says(
        healthy: object, tmp_path: Path, position: str) -> None:
    # Every stored pixel, placed in the patient by ImagePositionPatient, ImageOrientationPatient
    # and PixelSpacing, holds the value the supine phantom has at that place.
    study = healthy
    assert isinstance(study, PhantomStudy)
    paths = write_series(study, tmp_path / position, position=position)
    _, dy, dx = study.spacing
    x0, y0, _ = study.origin
    for k in (0, len(paths) // 2):
        ds = pydicom.dcmread(paths[k])
        assert ds.PatientPosition == position
        along_row, down_column = np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3))
        row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
        rows, columns = np.indices((ds.Rows, ds.Columns))
        place = (np.asarray([float(v) for v in ds.ImagePositionPatient])
                 + columns[..., None] * column_spacing * along_row
                 + rows[..., None] * row_spacing * down_column)
        supine_rows = np.rint((place[..., 1] - y0) / dy).astype(int)
        supine_cols = np.rint((place[..., 0] - x0) / dx).astype(int)
        assert np.allclose(place[..., 2], study.origin[2] + k * study.spacing[0])
        assert np.array_equal(apply_rescale(ds.pixel_array, ds), study.hu[k][supine_rows, supine_cols])
    supine = pydicom.dcmread(write_series(study, tmp_path / "supine")[0])
    assert (pydicom.dcmread(paths[0]).SeriesInstanceUID == supine.SeriesInstanceUID) == (position == "HFS")
    with pytest.raises(ValueError, match="unknown patient position 'SUPINE'"):
        write_series(study, tmp_path / "bad", position="SUPINE")


@pytest.mark.parametrize("position", ["HFP", "FFS", "HFDL"])
def test_series_stored_for_other_positions_pass_dciodvfy(healthy: object, tmp_path: Path,
                                                         position: str) -> None:
    require_dciodvfy()
    assert isinstance(healthy, PhantomStudy)
    assert validate(write_series(healthy, tmp_path, position=position)[0]) == []


def test_vendor_profiles_differ(tmp_path: Path) -> None:
    require_dciodvfy()
    profiles = {**VENDORS, **UNSEEN_VENDORS}
    assert len(VENDORS) >= 3 and UNSEEN_VENDORS and not set(VENDORS) & set(UNSEEN_VENDORS)
    study, _ = make_pair(9, None, slice_thickness_mm=5.0, matrix=256, healthy_twin=False, slices=[16])
    headers = {}
    for vendor in profiles:
        path = write_series(study, tmp_path / vendor, seed=9, vendor=vendor)[0]
        assert validate(path) == [], vendor
        ds = pydicom.dcmread(path)
        headers[vendor] = (ds.Manufacturer, ds.ManufacturerModelName, ds.ConvolutionKernel)
        # Unsigned storage cannot go below the rescale intercept, as on the real scanners.
        lowest = -32768 if ds.PixelRepresentation else float(ds.RescaleIntercept)
        expected = np.maximum(study.hu[0], lowest)
        assert np.array_equal(apply_rescale(ds.pixel_array, ds), expected)
    assert len(set(headers.values())) == len(profiles)
    assert len({(v.noise_hu, v.kernel_blur_px) for v in profiles.values()}) == len(profiles)
    assert {float(ds.RescaleIntercept) for ds in [pydicom.dcmread(p) for p in tmp_path.glob("*/*.dcm")]} == {
        v.rescale_intercept for v in profiles.values()}


def test_training_draws_only_the_training_vendors() -> None:
    drawn = {make_pair(seed, None, matrix=256, healthy_twin=False, slices=[0])[0].vendor
             for seed in range(24)}
    assert drawn == set(VENDORS)
    unseen = next(iter(UNSEEN_VENDORS))
    assert make_pair(1, None, matrix=256, vendor=unseen, healthy_twin=False, slices=[0])[0].vendor == unseen
    with pytest.raises(ValueError, match=unseen):
        make_study(1, None, matrix=256, vendor="no-such-scanner")


def test_a_texture_replaces_the_profiles_noise_and_blur_only() -> None:
    from scipy import ndimage

    from dicomnode.phantoms.vendors import ScannerTexture

    def render(texture: ScannerTexture | None) -> tuple[str, np.ndarray, np.ndarray]:
        study, _ = make_pair(5, None, vendor="ge", slice_thickness_mm=5.0, matrix=256, healthy_twin=False,
                             slices=[16], texture=texture)
        return study.vendor, study.hu[0].astype(float), study.brain_mask[0]

    vendor, plain, brain = render(None)
    smoother = ScannerTexture(noise_hu=(3.0, 3.0), noise_grain_px=2.4, kernel_blur_px=2.4)
    smooth_vendor, smooth, _ = render(smoother)
    assert vendor == smooth_vendor == "ge"
    inner = ndimage.binary_erosion(brain, iterations=8)

    def fine_detail(image: np.ndarray) -> float:
        """Spread of what a 1-pixel Gaussian removes inside the brain: fine grain and sharp edges."""
        return float((image - ndimage.gaussian_filter(image, 1.0))[inner].std())

    assert fine_detail(smooth) < 0.6 * fine_detail(plain)


def test_kernel_blur_and_noise_grain_are_lengths_not_pixels() -> None:
    """A 256 render is as sharp, and its noise as fine, in millimetres as a 512 render."""
    from dicomnode.phantoms.volume import _noise

    def sharpest_edge_hu_per_mm(matrix: int) -> float:
        study, _ = make_pair(5, None, vendor="ge", slice_thickness_mm=5.0, matrix=matrix, healthy_twin=False,
                             slices=[16])
        rows, cols = np.gradient(study.hu[0].astype(float), study.spacing[1])
        return float(np.percentile(np.hypot(rows, cols), 99.5))

    assert 0.8 < sharpest_edge_hu_per_mm(256) / sharpest_edge_hu_per_mm(512) < 1.25

    def neighbour_correlation(matrix: int) -> float:
        """Correlation of noise samples the same distance apart: 1 pixel at 256, 2 at 512."""
        noise = _noise(np.random.default_rng(3), (2, matrix, matrix), VENDORS["ge"], 5.0)
        step = matrix // 256
        return float(np.corrcoef(noise[:, :, :-step].ravel(), noise[:, :, step:].ravel())[0, 1])

    assert neighbour_correlation(256) == pytest.approx(neighbour_correlation(512), abs=0.08)


def test_thin_slices_keep_their_full_noise_only_when_asked() -> None:
    """Training caps thin slices' noise at 10 HU; real 0.625 mm soft-tissue series read more."""
    from dicomnode.phantoms.volume import NOISE_CAP_HU, _noise

    philips = VENDORS["philips"]  # 4.5-7 HU at 5 mm: 12.7-19.8 HU at 0.625 mm
    capped = _noise(np.random.default_rng(3), (2, 64, 64), philips, 0.625)
    full = _noise(np.random.default_rng(3), (2, 64, 64), philips, 0.625, cap_hu=30.0)
    assert capped.std() == pytest.approx(NOISE_CAP_HU, rel=1e-3)
    assert 12.5 < full.std() < 20.0
    thick = _noise(np.random.default_rng(3), (2, 64, 64), philips, 5.0, cap_hu=30.0)
    assert thick.std() == pytest.approx(_noise(np.random.default_rng(3), (2, 64, 64), philips, 5.0).std())


def test_cmd_phantom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_phantom(tmp_path / "out", "edh", 4, 5.0, 256) == 0
    files = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(files) == 32
    assert "epidural" in capsys.readouterr().out
    assert cmd_phantom(tmp_path / "bad", "nonsense", 4, 5.0, 256) == 2


def test_cmd_phantom_writes_a_series_compressed_with_loss(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_phantom(tmp_path / "lossy", None, 4, 5.0, 256, lossy_ratio=10.0) == 0
    assert "JPEG 2000 compressed with loss at about 10:1" in capsys.readouterr().out
    first = pydicom.dcmread(sorted((tmp_path / "lossy").glob("*.dcm"))[0])
    assert first.file_meta.TransferSyntaxUID == JPEG2000
    assert first.LossyImageCompression == "01" and first.LossyImageCompressionMethod == "ISO_15444_1"
    assert 9.0 <= float(first.LossyImageCompressionRatio) <= 11.0
    plain = make_study(4, None, slice_thickness_mm=5.0, matrix=256)
    stored = first.pixel_array.astype(np.float64) + float(first.RescaleIntercept)
    assert 0.1 < float(np.abs(stored - plain.hu[0]).mean()) < 10.0  # lossy, and still the same head
    lossless = pydicom.dcmread(write_series(plain, tmp_path / "plain")[0])
    assert first.SeriesInstanceUID != lossless.SeriesInstanceUID  # a lossy copy is another image
    assert first.SOPInstanceUID != lossless.SOPInstanceUID
    for bad in ({"lossy_ratio": 1.0}, {"lossy_ratio": 10.0, "enhanced": True}):
        assert cmd_phantom(tmp_path / "bad", None, 4, 5.0, 256, **bad) == 2  # type: ignore[arg-type]
        assert "--lossy-ratio must be above 1" in capsys.readouterr().out


def test_an_older_subdural_is_the_same_collection_at_its_age_density(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    by_age = {age: make_study(8, "sdh", slice_thickness_mm=5.0, matrix=256, lesion_size="large",
                              subdural_age=age) for age in ("acute", "subacute", "chronic")}
    fresh = make_study(8, "sdh", slice_thickness_mm=5.0, matrix=256, lesion_size="large")
    assert np.array_equal(by_age["acute"].hu, fresh.hu)  # the default, as training drew it
    inside = fresh.lesion_mask
    for age, (low, high) in {"acute": (50, 80), "subacute": (30, 45), "chronic": (8, 25)}.items():
        study = by_age[age]
        assert np.array_equal(study.lesion_mask, inside)
        assert low <= study.details["hu"] <= high
        far = ndimage.distance_transform_edt(~inside, sampling=study.spacing) > 50.0
        assert np.array_equal(study.hu[far], fresh.hu[far])  # the same head and noise elsewhere
    # The collection's core reads its age: brighter than the cortex, about as dense, darker.
    core = ndimage.binary_erosion(inside, iterations=1)
    medians = [float(np.median(by_age[age].hu[core])) for age in ("acute", "subacute", "chronic")]
    assert medians[0] > 50 > medians[1] > 25 > medians[2]
    assert cmd_phantom(tmp_path / "old", "sdh", 8, 5.0, 256, size="large", subdural_age="chronic") == 0
    assert "chronic" in capsys.readouterr().out
    # Written side by side, the fresh and the old one are two studies, not one overwritten.
    assert cmd_phantom(tmp_path / "fresh", "sdh", 8, 5.0, 256, size="large") == 0
    uids = {pydicom.dcmread(next((tmp_path / name).glob("*.dcm"))).StudyInstanceUID
            for name in ("old", "fresh")}
    assert len(uids) == 2
    assert cmd_phantom(tmp_path / "bad", "ich", 8, 5.0, 256, subdural_age="chronic") == 2
    assert "needs --lesion sdh" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown subdural age 'ancient'"):
        make_study(8, "sdh", matrix=256, subdural_age="ancient")


def test_a_collection_with_mass_effect_pushes_the_brain_across_the_midline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = make_study(5, "edh", slice_thickness_mm=5.0, matrix=256, lesion_size="large")
    pushed = make_study(5, "edh", slice_thickness_mm=5.0, matrix=256, lesion_size="large", mass_effect=True)
    # The same collection, drawn first: its mask and density stay as without mass effect.
    assert np.array_equal(pushed.lesion_mask, flat.lesion_mask)
    assert pushed.details["hu"] == flat.details["hu"]
    assert "midline_shift_mm" not in flat.details
    assert 2.0 <= pushed.details["midline_shift_mm"] <= pushed.details["thickness_mm"]
    # The brain moved: the ventricles' CSF (0-15 HU deep inside) lies elsewhere, and on the far
    # side of the midline from the collection it gained ground.
    core = ndimage.binary_erosion(pushed.brain_mask, np.ones((1, 3, 3)), iterations=20) & ~pushed.lesion_mask
    cols = np.arange(256)[None, None, :]

    def csf_column(study: PhantomStudy) -> float:
        csf = core & (study.hu < 15)
        return float((np.broadcast_to(cols, csf.shape)[csf]).mean())
    lesion_column = float(np.broadcast_to(cols, flat.lesion_mask.shape)[flat.lesion_mask].mean())
    moved = csf_column(pushed) - csf_column(flat)
    assert abs(moved) > 1.0
    assert np.sign(moved) == -np.sign(lesion_column - 127.5)  # away from the collection
    # Bone stays where it was: the skull is not pulled in.
    assert np.logical_xor(pushed.hu > 300, flat.hu > 300).sum() < 0.001 * (flat.hu > 300).sum()
    assert cmd_phantom(tmp_path / "pushed", "sdh", 8, 5.0, 256, size="large", mass_effect=True) == 0
    assert "septum moved" in capsys.readouterr().out
    assert cmd_phantom(tmp_path / "bad", "ich", 8, 5.0, 256, mass_effect=True) == 2
    assert "needs --lesion sdh or edh" in capsys.readouterr().out


def test_cmd_phantom_full_noise_writes_thin_slices_noisier_than_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomnode.generators.ct import image_noise_hu, load_ct_volume

    def noise(folder: str, full_noise: bool) -> float:
        assert cmd_phantom(tmp_path / folder, None, 4, 1.0, 256, vendor="philips", full_noise=full_noise) == 0
        volume = load_ct_volume([pydicom.dcmread(p) for p in sorted((tmp_path / folder).iterdir())])
        found = image_noise_hu(volume.hu, volume.pixel_spacing)
        assert found is not None
        return found

    assert noise("capped", False) < 10.5  # philips at 1 mm: 10-15.6 HU, capped at 10
    assert noise("full", True) > 11.0
    assert "full thin-slice noise" in capsys.readouterr().out


def test_cmd_phantom_writes_one_enhanced_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_phantom(tmp_path / "out", "edh", 4, 5.0, 256, enhanced=True) == 0
    (path,) = (tmp_path / "out").iterdir()
    image = pydicom.dcmread(path)
    assert image.SOPClassUID.name == "Legacy Converted Enhanced CT Image Storage"
    assert int(image.NumberOfFrames) == 32 and image.BodyPartExamined == "HEAD"
    assert "32 CT images as one multi-frame instance" in capsys.readouterr().out


@pytest.mark.parametrize("vessel_hu", [150.0, 350.0])
def test_a_contrast_enhanced_head_is_the_same_head_with_enhancing_vessels(vessel_hu: float) -> None:
    from dicomnode.generators.ct import CtVolume, enhanced

    plain = make_study(12, "sdh", slice_thickness_mm=5.0, matrix=256, lesion_size="medium")
    with_contrast = make_study(12, "sdh", slice_thickness_mm=5.0, matrix=256, lesion_size="medium",
                               contrast_hu=vessel_hu)
    # The same head, pose, lesion and noise: contrast draws from a stream of its own.
    assert np.array_equal(plain.lesion_mask, with_contrast.lesion_mask)
    assert plain.details["fov_mm"] == with_contrast.details["fov_mm"]
    brighter = with_contrast.hu.astype(np.float32) - plain.hu
    assert np.percentile(brighter[plain.brain_mask], 50) > 0.0  # the parenchyma gains a few HU
    assert brighter[plain.brain_mask].max() > 0.5 * (vessel_hu - 40.0)  # vessels

    def ml(study: PhantomStudy) -> float:
        pixel_spacing = (study.spacing[1], study.spacing[2])
        volume = CtVolume(study.hu.astype(np.float32), [], pixel_spacing, study.spacing[0])
        return enhanced(volume).bilateral_ml

    assert ml(plain) < 0.1 and ml(with_contrast) > 1.0


def test_cmd_phantom_contrast_writes_another_series_without_the_agent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_phantom(tmp_path / "plain", None, 4, 5.0, 256) == 0
    assert cmd_phantom(tmp_path / "enhanced", None, 4, 5.0, 256, contrast=175.0) == 0
    assert "contrast-enhanced (vessels 175 HU, agent not recorded)" in capsys.readouterr().out
    plain, enhanced = (pydicom.dcmread(next((tmp_path / f).iterdir())) for f in ("plain", "enhanced"))
    assert plain.SeriesInstanceUID != enhanced.SeriesInstanceUID
    assert "ContrastBolusAgent" not in enhanced
    assert cmd_phantom(tmp_path / "bad", None, 4, 5.0, 256, contrast=2000.0) == 2
    assert "within 100-600 HU" in capsys.readouterr().out


def test_a_coiled_head_is_the_same_head_with_metal_and_its_streaks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomnode.config import load_config
    from dicomnode.evaluation import _through_dicom
    from dicomnode.generators.anomaly_triage import TriageSettings, read_series
    from dicomnode.generators.ct import intracranial_metal

    plain = make_study(4, "sah", slice_thickness_mm=5.0, matrix=256, lesion_size="small")
    coiled = make_study(4, "sah", slice_thickness_mm=5.0, matrix=256, lesion_size="small", metal=True)
    # The same head, pose, lesion and noise: the coil draws from a stream of its own.
    assert np.array_equal(plain.lesion_mask, coiled.lesion_mask)
    changed = np.flatnonzero((coiled.hu != plain.hu).any(axis=(1, 2)))
    # Streaks cross the slices that hold the coil, and no others.
    assert 1 <= changed.size <= 3 and np.all(np.diff(changed) == 1)
    assert coiled.hu.max() == 3071 and plain.hu.max() < 3071
    streaked = coiled.hu[changed].astype(np.float32) - plain.hu[changed]
    assert np.mean(np.abs(streaked[coiled.brain_mask[changed]])) > 3.0
    # The node finds the metal inside the skull on those slices, warns, and triages the series.
    volume = _through_dicom(coiled)
    assert set(np.flatnonzero(intracranial_metal(volume))) <= set(changed)
    reading = read_series(volume, TriageSettings.from_params(load_config(None).anomaly_triage))
    assert reading.refused is None
    assert any(w.startswith("metal inside the skull") for w in reading.warnings)
    assert not intracranial_metal(_through_dicom(plain)).any()
    assert cmd_phantom(tmp_path / "coiled", None, 4, 5.0, 256, metal=True) == 0
    assert "mm coil with its streaks" in capsys.readouterr().out
    assert cmd_phantom(tmp_path / "plain", None, 4, 5.0, 256) == 0  # another study, not overwritten
    assert len({pydicom.dcmread(next((tmp_path / name).glob("*.dcm"))).StudyInstanceUID
                for name in ("coiled", "plain")}) == 2


def test_training_slices_are_the_lesions_and_some_from_each_third() -> None:
    from dicomnode.phantoms.volume import _pick_slices

    mask = np.zeros((31, 4, 4), dtype=bool)
    mask[12:15, 1, 1] = True
    thirds = np.array_split(np.arange(31), 3)
    # one per third draws as every earlier training run did, so their commands still reproduce
    rng = np.random.default_rng(3)
    earlier = np.unique(np.concatenate([np.arange(12, 15), [int(rng.choice(t)) for t in thirds]]))
    assert np.array_equal(_pick_slices("lesion", mask, 31, np.random.default_rng(3)), earlier)
    picked = _pick_slices("lesion", mask, 31, np.random.default_rng(3), per_third=4)
    assert set(range(12, 15)) <= set(picked.tolist())
    for third in thirds:
        healthy = set(third.tolist()) & set(picked.tolist()) - set(range(12, 15))
        assert len(healthy) >= 4 - len(set(third.tolist()) & set(range(12, 15)))
    assert np.array_equal(_pick_slices("lesion", mask[:5], 5, np.random.default_rng(3), per_third=4),
                          np.arange(5))  # a third smaller than asked: all of it
    with pytest.raises(ValueError, match="at least 1"):
        _pick_slices("lesion", mask, 31, np.random.default_rng(3), per_third=0)


def test_rendered_ahead_keeps_the_order_and_reads_an_endless_plan_only_as_taken() -> None:
    from collections.abc import Generator, Iterator
    from itertools import count, islice

    from dicomnode.phantoms.ahead import rendered_ahead

    # `dict(**job)` stands in for a renderer: module-level, so the workers can run it.
    assert list(rendered_ahead(dict, ({"i": i} for i in range(7)), workers=2)) == [{"i": i} for i in range(7)]
    drawn: list[int] = []

    def plan() -> Iterator[dict[str, int]]:
        for i in count():
            drawn.append(i)
            yield {"i": i}

    results: Generator[dict[str, int], None, None] = rendered_ahead(dict, plan(), workers=2)
    assert [r["i"] for r in islice(results, 3)] == [0, 1, 2]
    assert len(drawn) == 3 + 2 * 2  # the three taken and four rendering ahead
    results.close()  # stops the workers: nothing waits on the rest
    assert len(drawn) == 7


def test_a_field_of_view_can_replace_the_drawn_one(healthy: object) -> None:
    assert isinstance(healthy, PhantomStudy)
    wide = make_study(11, None, slice_thickness_mm=5.0, matrix=256, field_of_view_mm=360.0)
    assert wide.spacing[1:] == pytest.approx((360.0 / 256, 360.0 / 256))
    assert wide.vendor == healthy.vendor and wide.shape == healthy.shape  # the same scan otherwise
    # the same head: its brain fills the same volume at either pixel size
    ml = [s.brain_mask.sum() * np.prod(s.spacing) / 1000 for s in (healthy, wide)]
    assert ml[1] == pytest.approx(ml[0], rel=0.03)
    with pytest.raises(ValueError, match="field of view must be within 120-500 mm, got 600"):
        make_study(11, None, matrix=256, field_of_view_mm=600.0)


def _patient_centroid(path_mask: list[tuple[Path, np.ndarray]]) -> np.ndarray:
    """Mean patient (LPS) position of the true pixels, each slice placed by its own geometry."""
    points = []
    for path, mask in path_mask:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        along_row, down_column = np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3))
        row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
        rows, columns = np.nonzero(mask)
        points.append(np.asarray([float(v) for v in ds.ImagePositionPatient])
                      + columns[:, None] * column_spacing * along_row
                      + rows[:, None] * row_spacing * down_column)
    centroid: np.ndarray = np.concatenate(points).mean(axis=0)
    return centroid


@pytest.mark.parametrize("position", ["HFS", "HFP"])
def test_a_tilted_gantry_scans_the_same_head_in_the_same_place(tmp_path: Path, position: str) -> None:
    from dicomnode.generators.ct import load_ct_volume
    from dicomnode.phantoms.dicom_writer import as_stored

    upright, tilted = (make_study(21, "ich", slice_thickness_mm=2.5, matrix=256, lesion_size="medium",
                                  gantry_tilt_deg=tilt) for tilt in (0.0, 20.0))
    assert tilted.gantry_tilt_deg == 20.0
    assert tilted.table_step_mm == pytest.approx(2.5 / np.cos(np.radians(20)))
    assert tilted.lesion_volume_ml == pytest.approx(upright.lesion_volume_ml, rel=0.15)
    # The sheared slices show the head somewhere else in every image ...
    assert not np.array_equal(tilted.hu, upright.hu)
    centroids = []
    for study, name in ((upright, "upright"), (tilted, "tilted")):
        paths = write_series(study, tmp_path / name, position=position)
        masks = as_stored(position, study.lesion_mask)
        centroids.append(_patient_centroid(list(zip(paths, masks, strict=True))))
    # ... but placed in the patient by each slice's geometry, the lesion is where it was.
    assert np.linalg.norm(centroids[1] - centroids[0]) < 1.5
    datasets = [pydicom.dcmread(p) for p in sorted((tmp_path / "tilted").glob("*.dcm"))]
    assert datasets[0].GantryDetectorTilt == 20.0
    along_row, down_column = np.reshape([float(v) for v in datasets[0].ImageOrientationPatient], (2, 3))
    normal = np.cross(along_row, down_column)
    assert np.degrees(np.arccos(abs(normal[2]))) == pytest.approx(20.0, abs=1e-3)
    volume = load_ct_volume(datasets)  # the node reads it as an axial series 2.5 mm apart
    assert volume.slice_spacing == pytest.approx(2.5, abs=1e-3)
    inside = tilted.brain_mask  # turned to the supine view (the vendor's storage clips air)
    assert np.array_equal(volume.turn.apply(volume.hu)[inside], tilted.hu[inside])
    upright_first = pydicom.dcmread(tmp_path / "upright" / "CT.0001.dcm")
    assert datasets[0].StudyInstanceUID != upright_first.StudyInstanceUID
    if position == "HFP":
        require_dciodvfy()
        assert validate(tmp_path / "tilted" / "CT.0001.dcm") == []
    with pytest.raises(ValueError, match="gantry tilt must be within ±30 degrees, got 40"):
        make_study(21, None, matrix=256, gantry_tilt_deg=40.0)


def test_a_gantry_tilted_with_the_head_cuts_it_as_the_untilted_scan_only_sheared(tmp_path: Path) -> None:
    upright, along = (make_study(21, None, slice_thickness_mm=2.5, matrix=256, gantry_tilt_deg=tilt,
                                 head_pitch_deg=tilt) for tilt in (0.0, 20.0))
    pitched = make_study(21, None, slice_thickness_mm=2.5, matrix=256, head_pitch_deg=20.0)
    dy = upright.spacing[1]
    area = upright.brain_mask.sum(axis=(1, 2))
    kept = np.flatnonzero(area > 2000)
    # Each slice holds the same cut through the brain ...
    assert np.allclose(along.brain_mask.sum(axis=(1, 2))[kept], area[kept], rtol=0.01)
    # ... moved down the image by the table's travel times the tilt's sine, slice after slice.
    def centre_row_mm(study: PhantomStudy, k: int) -> float:
        return float(np.nonzero(study.brain_mask[k])[0].mean() * dy)

    moved = np.array([centre_row_mm(upright, k) - centre_row_mm(along, k) for k in kept])
    slope, _ = np.polyfit(kept, moved, 1)
    assert slope == pytest.approx(2.5 * np.tan(np.radians(20.0)), abs=0.02)
    assert np.abs(moved - np.polyval(np.polyfit(kept, moved, 1), kept)).max() < 0.3  # pixels are 0.9-1.05 mm
    # Pitching the head alone cuts it otherwise.
    assert not np.allclose(pitched.brain_mask.sum(axis=(1, 2))[kept], area[kept], rtol=0.05)
    assert pitched.head_pitch_deg == 20.0 and along.gantry_tilt_deg == 20.0
    # Each is another scan of the head, under its own UIDs.
    uids = {pydicom.dcmread(write_series(s, tmp_path / name)[0]).StudyInstanceUID
            for s, name in ((upright, "upright"), (along, "along"), (pitched, "pitched"))}
    assert len(uids) == 3
    with pytest.raises(ValueError, match="head pitch must be within ±30 degrees, got -35"):
        make_study(21, None, matrix=256, head_pitch_deg=-35.0)


def test_a_rolled_or_turned_head_is_the_same_head_turned_about_its_own_axes(tmp_path: Path) -> None:
    upright, rolled, turned = (make_study(21, None, slice_thickness_mm=2.5, matrix=256, **turn)
                               for turn in ({}, {"head_roll_deg": 20.0}, {"head_yaw_deg": 20.0}))

    def positions(study: PhantomStudy) -> np.ndarray:
        """LPS mm of every voxel centre: columns run to the left, rows to the back."""
        k, r, c = np.indices(study.shape, dtype=float)
        dz, dy, dx = study.spacing
        ox, oy, oz = study.origin
        return np.stack([ox + c * dx, oy + r * dy, oz + k * dz])

    def agreement(turned_study: PhantomStudy, rotation: np.ndarray) -> float:
        """Dice of the turned brain with the upright one carried by `rotation` (LPS, through the
        isocentre), where the upright scan covers the place."""
        p = np.einsum("ji,j...->i...", rotation, positions(turned_study))  # back to the upright head
        dz, dy, dx = upright.spacing
        ox, oy, oz = upright.origin
        index = np.stack([(p[2] - oz) / dz, (p[1] - oy) / dy, (p[0] - ox) / dx])
        covered = (index[0] >= 0) & (index[0] <= upright.shape[0] - 1)
        carried = ndimage.map_coordinates(upright.brain_mask.astype(np.uint8), index, order=0) > 0
        a, b = carried[covered], turned_study.brain_mask[covered]
        return float(2 * (a & b).sum() / (a.sum() + b.sum()))

    c, s = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
    left_ear_up = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # the left (+x) turns up (+z)
    nose_left = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # the nose (-y) turns left (+x)
    # The brain is round enough that an unturned or wrongly turned one still overlaps 0.87-0.93.
    for study, rotation in ((rolled, left_ear_up), (turned, nose_left)):
        assert agreement(study, rotation) > 0.98
        assert max(agreement(study, np.eye(3)), agreement(study, rotation.T)) < 0.95
    assert (rolled.head_roll_deg, turned.head_yaw_deg) == (20.0, 20.0)
    uids = {pydicom.dcmread(write_series(s, tmp_path / name)[0]).StudyInstanceUID
            for s, name in ((upright, "upright"), (rolled, "rolled"), (turned, "turned"))}
    assert len(uids) == 3
    with pytest.raises(ValueError, match="head roll must be within ±30 degrees, got 31"):
        make_study(21, None, matrix=256, head_roll_deg=31.0)
    with pytest.raises(ValueError, match="head yaw must be within ±30 degrees, got -40"):
        make_study(21, None, matrix=256, head_yaw_deg=-40.0)
