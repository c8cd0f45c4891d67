"""The anomaly-triage pipeline with hand-made models whose right answers are known.

`identity` restores nothing, so every anomaly map is empty; `clip45` caps every value at
45 HU (healthy parenchyma), so exactly the hyperdense blood shows as anomalous; `floor35`
raises every value to at least 35 HU, so exactly a hypodense infarct shows; `leftcap45`
does what `clip45` does on the left half of the image only: a model that errs on one side;
`cornercap45` does it on the top right quarter only, so it tells every turn of an image apart.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom import Dataset

pytest.importorskip("onnx", reason="the test models are built with onnx (test extra)")
import onnx
from onnx import TensorProto, helper

from dicomnode.config import EnginesConfig
from dicomnode.engines import EngineRegistry
from dicomnode.engines.manifest import file_sha256
from dicomnode.errors import ConfigError
from dicomnode.generators import anomaly_triage, ct
from dicomnode.generators.anomaly_triage import (
    AnomalyTriage,
    TriageSettings,
    analyse,
    analyse_volume,
    restore,
)
from dicomnode.generators.ct import SeriesRejected, load_ct_volume
from dicomnode.phantoms.dicom_writer import PATIENT_POSITIONS, compress_lossy
from tests.support.dciodvfy import validate
from tests.support.dicomdata import ct_series
from tests.support.sr import walk

WINDOW = (-20.0, 120.0)


def _write_model(zoo: Path, name: str, nodes: list[onnx.NodeProto],
                 initializers: list[onnx.TensorProto], field_of_view_mm: list[float] | None = None) -> None:
    folder = zoo / name
    folder.mkdir(parents=True)
    shape = ["batch", 1, 64, 64]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, folder / "model.onnx")
    tensor = {"dtype": "float32", "layout": "NCHW", "shape": shape}
    manifest = {
        "name": name, "version": "0.0.1", "task": "test", "sha256": file_sha256(folder / "model.onnx"),
        "inputs": [{"name": "image", **tensor}], "outputs": [{"name": "restored", **tensor}],
        "dynamic_dims": {"batch": {"min": 1, "opt": 4, "max": 16}},
        "preprocessing": {"hu_window": list(WINDOW), "normalize": "unit",
                          **({"field_of_view_mm": field_of_view_mm} if field_of_view_mm else {})},
        "training": {"command": "none", "seed": 0, "data": "none", "date": "2026-01-01"},
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "card.md").write_text("test model, not for diagnosis\n")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> EngineRegistry:
    zoo = tmp_path_factory.mktemp("zoo")
    _write_model(zoo, "identity", [helper.make_node("Identity", ["image"], ["restored"])], [])
    cap = (45.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
    _write_model(zoo, "clip45", [helper.make_node("Min", ["image", "cap"], ["restored"])],
                 [helper.make_tensor("cap", TensorProto.FLOAT, [], [cap])])
    left_cap = np.ones((1, 1, 64, 64), dtype=np.float32)
    left_cap[..., :32] = cap
    _write_model(zoo, "leftcap45", [helper.make_node("Min", ["image", "cap"], ["restored"])],
                 [helper.make_tensor("cap", TensorProto.FLOAT, left_cap.shape, left_cap.ravel())])
    corner_cap = np.ones((1, 1, 64, 64), dtype=np.float32)
    corner_cap[..., :32, 32:] = cap
    for name, field_of_view in (("cornercap45", None), ("cornercap45_fov24to32", [24.0, 32.0]),
                                ("cornercap45_fov40to48", [40.0, 48.0])):
        _write_model(zoo, name, [helper.make_node("Min", ["image", "cap"], ["restored"])],
                     [helper.make_tensor("cap", TensorProto.FLOAT, corner_cap.shape, corner_cap.ravel())],
                     field_of_view)
    floor = (35.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
    _write_model(zoo, "floor35", [helper.make_node("Max", ["image", "floor"], ["restored"])],
                 [helper.make_tensor("floor", TensorProto.FLOAT, [], [floor])])
    config = EnginesConfig(backend="onnxruntime", models_dir=zoo, load="first_use", batch_size=4)
    return EngineRegistry(config, tmp_path_factory.mktemp("data"), warmup=False)


def head_series(folder: Path, bleed_slices: set[int], infarct_slices: frozenset[int] = frozenset(),
                bone_slices: frozenset[int] = frozenset(), count: int = 6,
                slice_thickness: float = 5.0) -> list[Dataset]:
    """Axial slices of a skull ring around 35 HU brain; some with a 70 HU haemorrhage or a 25 HU
    infarct, some with a bone plate in the middle (the skull base) over both of them."""
    datasets = [pydicom.dcmread(p) for p in ct_series(folder, count, rows=64, columns=64,
                                                     slice_thickness=slice_thickness)]
    yy, xx = np.mgrid[:64, :64]
    radius = np.hypot(yy - 32, xx - 32)
    for i, ds in enumerate(datasets):
        hu = np.full((64, 64), -1000.0)
        hu[radius < 30] = 1000.0
        hu[radius < 25] = 35.0
        if i in bleed_slices:
            hu[np.hypot(yy - 28, xx - 36) < 5] = 70.0
        if i in infarct_slices:
            hu[np.hypot(yy - 34, xx - 26) < 8] = 25.0
        if i in bone_slices:
            hu[np.hypot(yy - 31, xx - 31) < 15] = 1000.0
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    return datasets


@pytest.mark.parametrize("body_part", ["HEAD", None])
def test_identity_model_finds_nothing_and_writes_valid_objects(registry: EngineRegistry, tmp_path: Path,
                                                               body_part: str | None) -> None:
    series = head_series(tmp_path / "in", bleed_slices={2, 3})
    if body_part is None:  # optional in CT, and some scanners leave it out
        for ds in series:
            del ds.BodyPartExamined
    output = AnomalyTriage(registry, {}).run(series, {"model": "identity"})
    assert output.triage is not None
    assert output.triage.score == 0.0 and output.triage.category == "routine"
    assert output.triage.top_slice_sop_uid is None
    heatmaps, report = output.objects[:-1], output.objects[-1]
    assert len(heatmaps) == 1  # the middle slice, shown even without a finding
    assert report.Modality == "SR"
    for i, ds in enumerate(output.objects):
        assert ds.StudyInstanceUID == series[0].StudyInstanceUID
        assert ds.SeriesDescription.startswith("AI")
        path = tmp_path / f"out{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert validate(path) == []
    assert output.objects[0].BodyPartExamined == "HEAD"


def test_hyperdense_blood_is_found_on_its_slices(registry: EngineRegistry, tmp_path: Path) -> None:
    series = head_series(tmp_path / "in", bleed_slices={2, 3})
    generator = AnomalyTriage(registry, {"calibration_ml": 0.05})
    output = generator.run(series, {"model": "clip45", "noise_floor_hu": 10.0, "slice_threshold_cm2": 0.05})
    summary = output.triage
    assert summary is not None
    assert summary.top_slice_index in (2, 3)
    assert summary.top_slice_frame_number is None  # classic slices: the instance is the slice
    assert summary.score > 40 and summary.category in ("urgent", "critical")
    assert summary.thumbnail_png is not None and summary.thumbnail_png.startswith(b"\x89PNG")
    referenced = {ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in output.objects[:-1]}
    assert referenced == {series[2].SOPInstanceUID, series[3].SOPInstanceUID}
    healthy = generator.run(head_series(tmp_path / "healthy", set()), {"model": "clip45"})
    assert healthy.triage is not None and healthy.triage.score == 0.0


def _with_noise(series: list[Dataset], noise_hu: float) -> list[Dataset]:
    rng = np.random.default_rng(5)
    for ds in series:
        stored = ds.pixel_array.astype(np.float64) + rng.normal(0.0, noise_hu, (ds.Rows, ds.Columns))
        ds.PixelData = np.clip(np.rint(stored), -32768, 32767).astype(np.int16).tobytes()
    return series


def test_a_series_too_noisy_for_the_model_is_refused_with_its_noise(registry: EngineRegistry,
                                                                      tmp_path: Path) -> None:
    # A bone-kernel reconstruction of a bleeding head: the bleed must not pass as routine.
    noisy = _with_noise(head_series(tmp_path / "noisy", bleed_slices={2, 3}), 25.0)
    generator = AnomalyTriage(registry, {})
    with pytest.raises(SeriesRejected, match=r"image noise in the brain is 2\d HU, above "
                                             r"anomaly_triage\.max_noise_hu \(15 HU"):
        generator.run(noisy, {"model": "identity"})
    sharp = _with_noise(head_series(tmp_path / "sharp", bleed_slices={2, 3}), 300.0)
    with pytest.raises(SeriesRejected, match="no brain tissue"):
        generator.run(sharp, {"model": "identity"})
    # A site may accept noisier series; within the limit, the series is triaged.
    assert generator.run(noisy, {"model": "identity", "max_noise_hu": 40.0}).triage is not None
    quiet = _with_noise(head_series(tmp_path / "quiet", bleed_slices={2, 3}), 5.0)
    assert generator.run(quiet, {"model": "identity"}).triage is not None


def test_a_contrast_enhanced_series_is_refused_naming_what_was_measured(registry: EngineRegistry,
                                                                         tmp_path: Path) -> None:
    # Enhancing vessels (200 HU) through the brain of a head whose headers do not declare the
    # contrast: the model would read them as blood.
    def with_vessels(folder: str, centres: tuple[tuple[int, int], ...]) -> list[Dataset]:
        series = head_series(tmp_path / folder, bleed_slices=set())
        yy, xx = np.mgrid[:64, :64]
        for ds in series:
            stored = ds.pixel_array.copy()
            for cy, cx in centres:
                stored[np.hypot(yy - cy, xx - cx) < 2.5] = 200 + 1024
            ds.PixelData = stored.tobytes()
        return series

    series = with_vessels("enhanced", ((20, 20), (20, 44), (44, 20), (44, 44), (32, 18), (32, 46)))
    generator = AnomalyTriage(registry, {"calibration_ml": 0.05})
    # 3 vessels of 21 pixels of 0.25 mm2 on each side, six 5 mm slices: 0.47 ml a side.
    with pytest.raises(SeriesRejected, match=r"looks contrast-enhanced: 0\.47 ml \(right\) and "
                                             r"0\.47 ml \(left\) of intracranial tissue at 130-300 HU "
                                             r"away from bone, .*; 0\.94 ml on both sides alike, above "
                                             r"anomaly_triage\.max_enhanced_ml \(0\.5 ml\)"):
        generator.run(series, {"model": "clip45"})
    # A site may accept more (up to 2 ml here): the series is then triaged.
    assert generator.run(series, {"model": "clip45", "max_enhanced_ml": 2.0}).triage is not None
    # As much on one side only (a shunt catheter, a calcified mass) is not contrast.
    one_side = with_vessels("one-side", ((16, 20), (24, 20), (32, 16), (40, 20), (48, 20), (32, 24)))
    alone = generator.run(one_side, {"model": "clip45"}).triage
    assert alone is not None and not alone.warnings
    # Less on both sides (one vessel each, 0.32 ml): triaged, with a warning.
    faint = generator.run(with_vessels("faint", ((32, 18), (32, 46))), {"model": "clip45"}).triage
    assert faint is not None
    (warning,) = faint.warnings
    assert warning.startswith("may be contrast-enhanced: 0.16 ml (right) and 0.16 ml (left)"), warning
    # A dense bleed (here 95 HU) is not contrast.
    bleed = head_series(tmp_path / "bleed", bleed_slices={2, 3})
    for ds in bleed:
        stored = ds.pixel_array.copy()
        stored[stored == 70 + 1024] = 95 + 1024
        ds.PixelData = stored.tobytes()
    dense = generator.run(bleed, {"model": "clip45"})
    assert dense.triage is not None and dense.triage.category == "critical"


def _coiled(series: list[Dataset], slices: set[int], vessels: bool = False) -> list[Dataset]:
    """A platinum coil in the middle of the head on `slices`, its blooming and bright streaks
    (200 HU) around it on both sides; with `vessels`, enhancing vessels on every slice."""
    yy, xx = np.mgrid[:64, :64]
    near = np.hypot(yy - 32, xx - 32)
    for i, ds in enumerate(series):
        stored = ds.pixel_array.copy()
        if vessels:
            for cy, cx in ((20, 20), (20, 44), (44, 20), (44, 44)):
                stored[np.hypot(yy - cy, xx - cx) < 2.5] = 200 + 1024
        if i in slices:
            stored[(near >= 6) & (near < 11)] = 200 + 1024
            stored[near < 2] = 3071 + 1024
        ds.PixelData = stored.tobytes()
    return series


def test_metal_inside_the_skull_is_named_and_its_streaks_are_not_taken_for_contrast(
        registry: EngineRegistry, tmp_path: Path) -> None:
    generator = AnomalyTriage(registry, {"calibration_ml": 0.05})
    series = _coiled(head_series(tmp_path / "coiled", bleed_slices=set()), {2, 3})
    # Read as it stands, the blooming around the coil is 0.67 ml of tissue at 130-300 HU on
    # both sides: a patient whose aneurysm was coiled would be refused as contrast-enhanced.
    volume = load_ct_volume(series)
    assert ct.enhanced(volume).bilateral_ml > 0.5
    triage = generator.run(series, {"model": "clip45"}).triage
    assert triage is not None
    (warning,) = triage.warnings
    assert warning.startswith("metal inside the skull (an aneurysm coil or clip, an electrode?) on 2 "
                              "slice(s) between 10.0 and 15.0 mm along the series"), warning
    # A head without metal, and a plate on the skull, have no such warning.
    plain = generator.run(head_series(tmp_path / "plain", bleed_slices=set()), {"model": "clip45"}).triage
    assert plain is not None and not plain.warnings
    plated = head_series(tmp_path / "plated", bleed_slices=set())
    yy, xx = np.mgrid[:64, :64]
    for ds in plated:
        stored = ds.pixel_array.copy()
        stored[(np.hypot(yy - 32, xx - 32) >= 26) & (xx > 52)] = 3071 + 1024
        ds.PixelData = stored.tobytes()
    on_skull = generator.run(plated, {"model": "clip45"}).triage
    assert on_skull is not None and not on_skull.warnings
    # The slices beside the coil are left out of the contrast check, the others still count.
    enhanced = _coiled(head_series(tmp_path / "enhanced", bleed_slices=set(), count=12), {5, 6}, vessels=True)
    with pytest.raises(SeriesRejected, match="looks contrast-enhanced"):
        generator.run(enhanced, {"model": "clip45"})


def test_a_child_is_refused_naming_the_age_and_the_setting(registry: EngineRegistry, tmp_path: Path) -> None:
    series = head_series(tmp_path / "child", bleed_slices={2, 3})
    for ds in series:
        ds.PatientAge = "007Y"
    generator = AnomalyTriage(registry, {"calibration_ml": 0.05})
    with pytest.raises(SeriesRejected, match=r"the patient is 7 years old, under "
                                             r"anomaly_triage\.min_patient_age_years \(18\)"):
        generator.run(series, {"model": "clip45"})
    # A site may triage children; an adult, or a series that states no age, is triaged.
    assert generator.run(series, {"model": "clip45", "min_patient_age_years": 0}).triage is not None
    for ds in series:
        ds.PatientAge = "018Y"
    assert generator.run(series, {"model": "clip45"}).triage is not None
    for ds in series:
        del ds.PatientAge
        ds.PatientBirthDate = ""
    assert generator.run(series, {"model": "clip45"}).triage is not None
    with pytest.raises(ConfigError, match="min_patient_age_years"):
        TriageSettings.from_params({"min_patient_age_years": -1})


def test_a_lossy_compressed_series_is_refused_above_the_ratio_set_and_named_below_it(
        registry: EngineRegistry, tmp_path: Path) -> None:
    def compressed(folder: str, ratio: float) -> list[Dataset]:
        series = _with_noise(head_series(tmp_path / folder, bleed_slices={2, 3}), 5.0)
        for ds in series:
            compress_lossy(ds, ratio)
        return series

    generator = AnomalyTriage(registry, {"calibration_ml": 0.05})
    hard = compressed("hard", 60.0)
    refused = (r"lossy compressed \(every instance; ISO_15444_1; \d\d:1\), above the 20:1 that "
               r"anomaly_triage\.max_lossy_ratio \(20:1 for 0\.5 mm pixels\) allows for its 0\.50 x 0\.50 mm "
               r"pixels: .* triage the original \(lossless\) series")
    with pytest.raises(SeriesRejected, match=refused):
        generator.run(hard, {"model": "clip45"})
    # (These 64x64 slices lose the bleed from about 6:1; a 512 slice holds 64 times the pixels.)
    mild = compressed("mild", 3.0)
    # A site may accept less.
    with pytest.raises(SeriesRejected, match=r"; 3:1\), above the 2:1 that anomaly_triage\.max_lossy_ratio"):
        generator.run(mild, {"model": "clip45", "max_lossy_ratio": 2})
    # Coarser pixels hold more of the head each: less compression is accepted.
    coarse = compressed("coarse", 8.0)
    for ds in coarse:
        ds.PixelSpacing = [1.0, 1.0]
    with pytest.raises(SeriesRejected, match=r"above the 5:1 that .* allows for its 1\.00 x 1\.00 mm pixels"):
        generator.run(coarse, {"model": "clip45"})
    output = generator.run(mild, {"model": "clip45", "noise_floor_hu": 10.0})
    assert output.triage is not None and output.triage.category in ("urgent", "critical")
    (warning,) = output.triage.warnings
    assert warning.startswith("lossy compressed (every instance; ISO_15444_1; 3:1): the model learnt "
                              "lossless")
    # The heat maps are made of the compressed pixels: they say so, as DICOM asks.
    for i, ds in enumerate(output.objects[:-1]):
        assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_15444_1"
        assert 2.5 < float(ds.LossyImageCompressionRatio) < 3.5
        path = tmp_path / f"heatmap{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert validate(path) == []
    with pytest.raises(ConfigError, match=r"anomaly_triage\.max_lossy_ratio: must be 1 or more"):
        TriageSettings.from_params({"max_lossy_ratio": 0.5})


def test_blood_under_a_burr_hole_is_found(registry: EngineRegistry, tmp_path: Path) -> None:
    # A head of adult size (2 mm pixels: 100 mm across the skull) whose ring of bone a 22 mm
    # gap opens on the bleed's slices: the brain there is masked from the bone's convex hull.
    series = head_series(tmp_path / "burr", bleed_slices={2, 3})
    yy, xx = np.mgrid[:64, :64]
    for ds in series:
        ds.PixelSpacing = [2.0, 2.0]
    for ds in series[1:5]:
        stored = ds.pixel_array.copy()
        stored[(np.abs(yy - 28) < 6) & (xx > 55) & (stored > 1024 + 300)] = 40 + 1024
        ds.PixelData = stored.tobytes()
    generator = AnomalyTriage(registry, {"calibration_ml": 0.05})
    output = generator.run(series, {"model": "clip45", "noise_floor_hu": 10.0, "slice_threshold_cm2": 0.05})
    assert output.triage is not None and output.triage.category == "critical"
    assert output.triage.top_slice_index in (2, 3)
    # The reader is told where the skull was open (slices 2-5 of 6, 5 mm apart).
    (warning,) = output.triage.warnings
    assert warning.startswith("the skull is open on 4 slice(s) between 5.0 and 20.0 mm along the "
                              "series"), warning
    intact = generator.run(head_series(tmp_path / "intact", bleed_slices={2, 3}), {"model": "clip45"})
    assert intact.triage is not None and not intact.triage.warnings


def test_a_thin_noisy_series_is_read_as_running_slabs(registry: EngineRegistry, tmp_path: Path) -> None:
    # 0.625 mm slices with 20 HU of noise (thin slices of a soft-tissue kernel): too noisy to
    # read slice by slice, quiet enough averaged into slabs of five slices (3.1 mm).
    series = _with_noise(head_series(tmp_path / "thin", bleed_slices=set(range(6, 11)), count=18,
                                     slice_thickness=0.625), 20.0)
    generator = AnomalyTriage(registry, {"noise_floor_hu": 5.0, "calibration_ml": 0.01})
    output = generator.run(series, {"model": "clip45"})
    assert output.triage is not None and output.triage.category == "critical"
    assert output.triage.top_slice_index in (7, 8, 9)
    assert output.triage.details["slab_mm"] == pytest.approx(3.125)
    assert any("running 3.1 mm slabs" in warning for warning in output.triage.warnings)
    report = output.objects[-1]
    assert report.SeriesDescription.startswith("AI")
    assert "slab_mm=3.12" in _text_values(report)
    for i, ds in enumerate(output.objects):
        path = tmp_path / f"out{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert validate(path) == []
    # Without slabs the same series is refused, naming its noise.
    with pytest.raises(SeriesRejected, match=r"image noise in the brain is (19|20|21) HU, above"):
        generator.run(series, {"model": "clip45", "slab_noise_hu": 30.0})
    # A thick series as quiet as the slabs is read slice by slice, as before.
    thick = generator.run(_with_noise(head_series(tmp_path / "thick", {2, 3}), 5.0), {"model": "clip45"})
    assert thick.triage is not None and "slab_mm" not in thick.triage.details
    assert not thick.triage.warnings


def test_hypodense_infarct_is_found_on_its_slices(registry: EngineRegistry, tmp_path: Path) -> None:
    series = head_series(tmp_path / "in", set(), infarct_slices=frozenset({1, 2}))
    generator = AnomalyTriage(registry, {"calibration_ml": 0.005, "slice_threshold_cm2": 0.01})
    # A 10 HU drop over a few slices of a small test head: a floor of 5 HU leaves excess to score.
    output = generator.run(series, {"model": "floor35", "hypodense_floor_hu": 5.0})
    assert output.triage is not None
    assert output.triage.top_slice_index in (1, 2)
    assert output.triage.score > 40
    referenced = {ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in output.objects[:-1]}
    assert referenced == {series[1].SOPInstanceUID, series[2].SOPInstanceUID}
    # The same 10 HU drop under a floor above it counts for nothing.
    quiet = generator.run(series, {"model": "floor35", "hypodense_floor_hu": 12.0})
    assert quiet.triage is not None and quiet.triage.score == 0.0


def test_brightness_beside_bone_in_the_next_slice_is_not_counted_as_blood(registry: EngineRegistry,
                                                                         tmp_path: Path) -> None:
    # A thick slice under the skull base may hold a sliver of the bone the next slice shows:
    # brighter than brain, and not blood. Hypodense findings there still count.
    generator = AnomalyTriage(registry, {"calibration_ml": 0.05})
    params = {"model": "clip45", "noise_floor_hu": 10.0, "slice_threshold_cm2": 0.05}
    under_bone = generator.run(head_series(tmp_path / "a", {3}, bone_slices=frozenset({4})), params)
    assert under_bone.triage is not None and under_bone.triage.score == 0.0
    apart = generator.run(head_series(tmp_path / "b", {3}, bone_slices=frozenset({5})), params)
    assert apart.triage is not None and apart.triage.score > 40 and apart.triage.top_slice_index == 3
    infarct = head_series(tmp_path / "c", set(), infarct_slices=frozenset({1}), bone_slices=frozenset({2}))
    found = AnomalyTriage(registry, {"calibration_ml": 0.005, "slice_threshold_cm2": 0.01}).run(
        infarct, {"model": "floor35", "hypodense_floor_hu": 5.0})
    assert found.triage is not None and found.triage.score > 40 and found.triage.top_slice_index == 1


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_scoring_a_few_slices_at_a_time_changes_nothing(registry: EngineRegistry, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # A thin series is masked, resampled and scored a few slices at a time to bound memory; the
    # bone rule reads 3 mm (3 slices of 1 mm) across the edges of those chunks.
    series = head_series(tmp_path / "in", {2, 5, 9}, bone_slices=frozenset({7}), count=12,
                         slice_thickness=1.0)
    volume = load_ct_volume(series)
    engine = registry.get("clip45")
    settings = TriageSettings(model="clip45", noise_floor_hu=10.0)
    whole = analyse_volume(volume, engine, settings)
    assert whole.slice_scores[2] > 0 and whole.slice_scores[5] == whole.slice_scores[9] == 0.0
    monkeypatch.setattr(anomaly_triage, "CHUNK_SLICES", chunk)
    monkeypatch.setattr(ct, "CHUNK_SLICES", chunk)
    chunked = analyse_volume(volume, engine, settings)
    assert chunked.raw_ml == whole.raw_ml
    for name in ("pseudo_healthy", "difference", "anomaly", "slice_scores"):
        assert np.array_equal(getattr(chunked, name), getattr(whole, name)), name


def test_a_rectangular_image_is_padded_to_a_square_not_stretched(registry: EngineRegistry,
                                                                  tmp_path: Path) -> None:
    # The model's grid is square: a wider image reaches it padded with air (rows above and
    # below), the same as if the scanner had sent the square field of view.
    volume = load_ct_volume(head_series(tmp_path / "in", {2}))
    wide = replace(volume, hu=np.pad(volume.hu, ((0, 0), (0, 0), (8, 8)), constant_values=-1000.0))
    square = replace(wide, hu=np.pad(wide.hu, ((0, 0), (8, 8), (0, 0)), constant_values=-1000.0))
    engine = registry.get("leftcap45")
    restored = restore(wide, engine, mirror_average=True)
    assert restored.shape == wide.hu.shape
    assert np.array_equal(restored, restore(square, engine, mirror_average=True)[:, 8:-8])
    assert analyse_volume(wide, engine, TriageSettings(model="leftcap45")).slice_scores[2] > 0


@pytest.mark.parametrize("position", sorted(PATIENT_POSITIONS))
@pytest.mark.parametrize("mirror_average", [False, True])
def test_slices_stored_turned_are_restored_as_the_model_sees_a_supine_head(
        registry: EngineRegistry, tmp_path: Path, position: str, mirror_average: bool) -> None:
    # The model learnt heads with the face at the top; a prone patient's slices arrive upside
    # down, and shown as stored a real model restores them badly. The orientation tag says so.
    orientation, turn = PATIENT_POSITIONS[position]  # tested against the patient's geometry
    supine = head_series(tmp_path / "supine", {2, 3})
    turned = head_series(tmp_path / "turned", {2, 3})
    for ds in turned:
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelData = np.ascontiguousarray(turn(ds.pixel_array)).tobytes()
    engine = registry.get("cornercap45")
    supine_volume, turned_volume = load_ct_volume(supine), load_ct_volume(turned)
    expected = dict(zip((ds.InstanceNumber for ds in supine_volume.datasets),
                        restore(supine_volume, engine, mirror_average), strict=True))
    restored = restore(turned_volume, engine, mirror_average)
    for ds, image in zip(turned_volume.datasets, restored, strict=True):  # feet first: reversed order
        assert np.array_equal(image, turn(expected[ds.InstanceNumber]))
    settings = TriageSettings(model="cornercap45", mirror_average=mirror_average, noise_floor_hu=4.0)
    raw_ml = analyse(supine, engine, settings).raw_ml
    assert raw_ml > 0
    assert analyse(turned, engine, settings).raw_ml == pytest.approx(raw_ml, rel=1e-5)


def test_rectangular_pixels_are_resampled_to_square_ones(registry: EngineRegistry, tmp_path: Path) -> None:
    # The same head sampled twice as finely along the rows: the model sees the same image.
    series = head_series(tmp_path / "in", {2})
    volume = load_ct_volume(series)
    fine = replace(volume, hu=np.repeat(volume.hu, 2, axis=2),
                   pixel_spacing=(volume.pixel_spacing[0], volume.pixel_spacing[1] / 2))
    engine = registry.get("cornercap45")
    expected = ct.resample_slices(restore(volume, engine), fine.hu.shape[1:])
    assert np.array_equal(restore(fine, engine), expected)


def test_a_wider_field_of_view_is_cut_around_the_head(registry: EngineRegistry, tmp_path: Path) -> None:
    # 64 pixels of 0.5 mm: a 32 mm field of view, the widest the model knows. Sent with 16 more
    # pixels of air on every side (48 mm), the model sees the same 32 mm around the skull.
    volume = load_ct_volume(head_series(tmp_path / "in", {2}))
    wide = replace(volume, hu=np.pad(volume.hu, ((0, 0), (16, 16), (16, 16)), constant_values=-1000.0))
    engine = registry.get("cornercap45_fov24to32")
    restored = restore(wide, engine, mirror_average=True)
    expected = restore(volume, engine, mirror_average=True)
    assert np.array_equal(restored[:, 16:-16, 16:-16], expected)
    outside = np.ones(wide.hu.shape, dtype=bool)
    outside[:, 16:-16, 16:-16] = False
    assert np.array_equal(restored[outside], np.clip(wide.hu[outside], *WINDOW))  # its own twin
    # Without the field of view in its manifest, the model sees the head shrunk by a third.
    assert not np.allclose(restore(wide, registry.get("cornercap45"), mirror_average=True)[:, 16:-16, 16:-16],
                           expected, atol=1.0)


def test_a_narrower_field_of_view_is_padded_with_air(registry: EngineRegistry, tmp_path: Path) -> None:
    # 32 mm sent to a model that knows 40-48 mm: seen as if the scanner had sent 40 mm.
    volume = load_ct_volume(head_series(tmp_path / "in", {2}))
    wider = replace(volume, hu=np.pad(volume.hu, ((0, 0), (8, 8), (8, 8)), constant_values=-1000.0))
    engine = registry.get("cornercap45_fov40to48")
    assert np.array_equal(restore(volume, engine), restore(wider, engine)[:, 8:-8, 8:-8])


def test_settings_are_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"anomaly_triage\.critcal"):
        TriageSettings.from_params({"critcal": 80})
    with pytest.raises(ConfigError, match=r"anomaly_triage\.urgent: expected float"):
        TriageSettings.from_params({"urgent": "high"})
    with pytest.raises(ConfigError, match="urgent <= critical"):
        TriageSettings.from_params({"urgent": 90, "critical": 50})
    with pytest.raises(ConfigError, match=r"anomaly_triage\.hypodense_floor_hu: must be positive"):
        TriageSettings.from_params({"hypodense_floor_hu": 0})
    settings = TriageSettings.from_params({"critical": 80}, {"critical": 60, "urgent": 30})
    assert (settings.critical, settings.urgent) == (60.0, 30.0)
    assert [settings.category(s) for s in (10, 30, 60)] == ["routine", "urgent", "critical"]


def test_the_pseudo_healthy_volume_averages_the_series_and_its_mirror_image(registry: EngineRegistry,
                                                                          tmp_path: Path) -> None:
    series = head_series(tmp_path / "in", {2, 3})  # the bleed lies mostly right of the midline
    engine = registry.get("leftcap45")
    volume = load_ct_volume(series)
    once, averaged = restore(volume, engine), restore(volume, engine, mirror_average=True)
    right_bleed = (volume.hu == 70.0) & (np.arange(64) >= 32)
    assert right_bleed.sum() > 50
    # Alone, the model leaves the right half as it is; its mirror image brings the bleed to the
    # capped side, so the average restores it half way.
    assert np.allclose(once[right_bleed], 70.0, atol=0.01)
    assert np.allclose(averaged[right_bleed], (70.0 + 45.0) / 2, atol=0.01)
    # Averaged, mirroring the series mirrors the pseudo-healthy volume (columns, not rows).
    mirrored = replace(volume, hu=np.ascontiguousarray(volume.hu[:, :, ::-1]))
    assert np.allclose(restore(mirrored, engine, mirror_average=True), averaged[:, :, ::-1], atol=1e-3)
    assert not np.allclose(restore(mirrored, engine), once[:, :, ::-1], atol=1)
    # The setting reaches the score: on by default, off on request (the averaged bleed stands
    # 12.5 HU above its pseudo-healthy value, so a 4 HU floor).
    generator = AnomalyTriage(registry, {"calibration_ml": 0.05, "noise_floor_hu": 4.0})
    params: dict[str, object] = {"model": "leftcap45", "slice_threshold_cm2": 0.05}
    averaged_output = generator.run(series, params)
    single_output = generator.run(series, {**params, "mirror_average": False})
    found, missed = averaged_output.triage, single_output.triage
    assert found is not None and missed is not None
    assert found.score > 40 and found.top_slice_index in (2, 3)
    assert missed.score < found.score / 2
    # The report names the setting among the algorithm's parameters (TID 4019).
    assert "mirror_average=on" in _text_values(averaged_output.objects[-1])
    assert "mirror_average=off" in _text_values(single_output.objects[-1])


def _text_values(report: Dataset) -> list[str]:
    return [str(item.TextValue) for item in walk(report.ContentSequence) if "TextValue" in item]


def _coded_values(report: Dataset) -> list[str]:
    return [str(item.ConceptCodeSequence[0].CodeMeaning) for item in walk(report.ContentSequence)
            if "ConceptCodeSequence" in item]


def test_the_raw_score_weighs_each_slice_by_its_thickness(registry: EngineRegistry, tmp_path: Path) -> None:
    regular = head_series(tmp_path / "regular", {2, 3})
    thinner = head_series(tmp_path / "thinner", {2, 3})
    for ds, z in zip(thinner, [0, 5, 10, 12.5, 17.5, 22.5], strict=True):
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z]  # slices 2 and 3 span 3.75 mm
    settings = TriageSettings(model="clip45", noise_floor_hu=10.0)
    engine = registry.get("clip45")
    full = analyse(regular, engine, settings).raw_ml
    assert full > 0
    assert analyse(thinner, engine, settings).raw_ml == pytest.approx(0.75 * full, rel=1e-5)


def test_a_possibly_missing_slice_reaches_the_worklist_summary(registry: EngineRegistry,
                                                               tmp_path: Path) -> None:
    generator = AnomalyTriage(registry, {})
    regular = generator.run(head_series(tmp_path / "regular", {2}), {"model": "clip45"})
    assert regular.triage is not None and regular.triage.warnings == ()
    gap = head_series(tmp_path / "gap", {2})
    for ds, z in zip(gap, [0, 5, 10, 20, 25, 30], strict=True):
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z]
    output = generator.run(gap, {"model": "clip45"})
    assert output.triage is not None
    assert output.triage.warnings == (
        "a slice may be missing between 10.0 and 20.0 mm along the series; its neighbours were scored "
        "across the gap",)
    flagged = [_coded_values(ds) for ds in (regular.objects[-1], output.objects[-1])]
    assert ["Slice possibly missing" in values for values in flagged] == [False, True]
