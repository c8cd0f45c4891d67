"""The midline shift: the septum's offset from the skull's plane of symmetry (generators.midline)."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.config import load_config
from dicomnode.errors import ConfigError
from dicomnode.generators.anomaly_triage import TriageSettings, score_volume
from dicomnode.generators.ct import CtVolume, brain_mask
from dicomnode.generators.midline import WARN_SHIFT_MM, midline_shift

pytest.importorskip("nilearn")

from dicomnode.evaluation import _through_dicom
from dicomnode.phantoms import PhantomStudy, make_study


def _read(study: PhantomStudy, position: str = "HFS") -> tuple[CtVolume, np.ndarray]:
    volume = _through_dicom(study, position)
    return volume, brain_mask(volume.hu, volume.pixel_spacing)


@pytest.mark.parametrize(("seed", "thickness", "roll", "yaw"), [
    (31, 5.0, 0.0, 0.0), (31, 5.0, 20.0, 0.0), (32, 2.5, -15.0, 0.0), (32, 2.5, 0.0, 18.0),
    (33, 1.0, 12.0, -12.0),
])
def test_a_healthy_head_reads_no_shift_however_it_lies(seed: int, thickness: float, roll: float,
                                                        yaw: float) -> None:
    volume, mask = _read(make_study(seed, None, slice_thickness_mm=thickness, matrix=256, head_roll_deg=roll,
                                    head_yaw_deg=yaw))
    shift = midline_shift(volume.hu, mask, volume.pixel_spacing, np.array(volume.positions))
    assert shift is not None and shift.slices >= 2
    assert abs(shift.shift_mm) < 3.0  # the template's own asymmetry and the fit's error


@pytest.mark.parametrize(("seed", "kind", "age", "position"), [
    (5, "edh", "acute", "HFS"), (5, "edh", "acute", "HFP"), (21, "sdh", "chronic", "HFS"),
])
def test_a_collection_pushing_the_brain_is_warned_of_whatever_its_density(
        seed: int, kind: str, age: str, position: str) -> None:
    study = make_study(seed, kind, slice_thickness_mm=5.0, matrix=256, lesion_size="large", subdural_age=age,
                       mass_effect=True)
    truth = -study.details["septum_shift_mm"]  # drawn along RAS x (+: right); columns run to the left
    assert abs(truth) >= WARN_SHIFT_MM
    volume, _ = _read(study, position)
    window = (-20.0, 120.0)
    unchanged = np.clip(volume.hu, *window).astype(np.float32)  # no density evidence at all
    settings = TriageSettings.from_params(load_config(None).anomaly_triage)
    analysis = score_volume(volume, unchanged, window, settings)
    assert analysis.midline_shift_mm is not None
    assert analysis.midline_shift_mm == pytest.approx(truth, abs=2.5)
    [warning] = [w for w in analysis.warnings if w.startswith("midline shift")]
    side = "left" if truth > 0 else "right"
    assert f"to the patient's {side}" in warning
    assert analysis.category == "routine"  # no density evidence: the shift alone decides nothing
    critical = TriageSettings.from_params(load_config(None).anomaly_triage, {"midline_shift_critical_mm": 5})
    assert score_volume(volume, unchanged, window, critical).category == "critical"


def test_the_same_collection_not_pushing_reads_no_shift() -> None:
    volume, mask = _read(make_study(21, "sdh", slice_thickness_mm=5.0, matrix=256, lesion_size="large",
                                    subdural_age="chronic"))
    shift = midline_shift(volume.hu, mask, volume.pixel_spacing, np.array(volume.positions))
    assert shift is not None and abs(shift.shift_mm) < 3.0


def test_the_critical_shift_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="midline_shift_critical_mm: must be 0 or more"):
        TriageSettings.from_params({"midline_shift_critical_mm": -5})


def test_without_a_skull_or_ventricles_there_is_nothing_to_measure() -> None:
    volume, mask = _read(make_study(31, None, slice_thickness_mm=5.0, matrix=256))
    positions = np.array(volume.positions)
    assert midline_shift(volume.hu[:2], mask[:2], volume.pixel_spacing, positions[:2]) is None
    soft = np.minimum(volume.hu, 80.0)  # no bone: no plane to measure from
    assert midline_shift(soft, mask, volume.pixel_spacing, positions) is None
    assert midline_shift(volume.hu, np.zeros_like(mask), volume.pixel_spacing, positions) is None
    # Three thin slices are too few to thin out for the skull's plane: all three are used.
    thin = midline_shift(volume.hu[12:15], mask[12:15], volume.pixel_spacing, np.array([0.0, 0.5, 1.0]))
    assert thin is None or abs(thin.shift_mm) < 3.0
