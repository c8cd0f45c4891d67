"""Reading how far the head lies rolled or turned in its slices (generators.orientation)."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.config import load_config
from dicomnode.generators.anomaly_triage import TriageSettings, score_volume
from dicomnode.generators.ct import CtVolume, brain_mask
from dicomnode.generators.orientation import WARN_ROLL_DEG, WARN_YAW_DEG, head_turn

pytest.importorskip("nilearn")

from dicomnode.evaluation import _through_dicom
from dicomnode.phantoms import make_study
from dicomnode.phantoms.volume import streams


def _drawn_roll_and_yaw(seed: int) -> tuple[float, float]:
    """The roll and yaw a phantom's own pose draws (phantoms.volume._random_pose)."""
    rng = streams(seed)["pose"]
    yaw, _, roll = rng.uniform(-8.0, 8.0), rng.uniform(-12.0, 12.0), rng.uniform(-5.0, 5.0)
    return float(roll), float(yaw)


def _read(seed: int, thickness: float, roll: float = 0.0, yaw: float = 0.0,
          lesion: str | None = None) -> tuple[CtVolume, np.ndarray]:
    volume = _through_dicom(make_study(seed, lesion, slice_thickness_mm=thickness, matrix=256,
                                       lesion_size="large" if lesion else None,
                                       head_roll_deg=roll, head_yaw_deg=yaw))
    return volume, brain_mask(volume.hu, volume.pixel_spacing)


@pytest.mark.parametrize(("seed", "thickness", "roll", "yaw", "lesion"), [
    (31, 5.0, 0.0, 0.0, None), (31, 5.0, 20.0, 0.0, None), (32, 2.5, -15.0, 0.0, None),
    (32, 2.5, 0.0, 18.0, None), (33, 1.0, 12.0, -12.0, None),
    # A large bleed on one side must not pull the midline with it (seed 106's, in 0.625 mm
    # slices, read as a 25 degree roll before densities above grey matter were capped).
    (106, 5.0, 0.0, 0.0, "ich"), (107, 5.0, 0.0, 0.0, "sdh"),
])
def test_the_roll_and_yaw_read_from_the_slices_are_the_heads(seed: int, thickness: float, roll: float,
                                                             yaw: float, lesion: str | None) -> None:
    volume, mask = _read(seed, thickness, roll, yaw, lesion)
    turn = head_turn(volume.hu, mask, volume.pixel_spacing, np.array(volume.positions))
    assert turn is not None
    drawn_roll, drawn_yaw = _drawn_roll_and_yaw(seed)
    # Columns run to the patient's left: a left ear turned up (positive roll) moves the midline
    # to lower columns going up the head, and a nose turned left leans it the other way.
    assert -turn.roll_deg == pytest.approx(drawn_roll + roll, abs=5.0)
    assert -turn.yaw_deg == pytest.approx(drawn_yaw + yaw, abs=5.0)


def test_a_head_rolled_or_turned_beyond_training_is_named_on_the_worklist() -> None:
    settings = TriageSettings.from_params(load_config(None).anomaly_triage)
    window = (-20.0, 120.0)

    def warnings(roll: float, yaw: float) -> list[str]:
        volume, _ = _read(34, 5.0, roll, yaw)
        unchanged = np.clip(volume.hu, *window).astype(np.float32)
        return [w for w in score_volume(volume, unchanged, window, settings).warnings if "the head lies" in w]

    assert warnings(0.0, 0.0) == []
    [rolled] = warnings(20.0, 0.0)
    assert "rolled about" in rolled and "turned" not in rolled
    [turned] = warnings(0.0, -22.0)
    assert "turned about" in turned and "rolled" not in turned
    assert WARN_ROLL_DEG < 20.0 - 5.0 and WARN_YAW_DEG < 22.0 - 5.0  # warned despite the estimate's error


def test_too_few_slices_through_the_cerebrum_tell_nothing() -> None:
    volume, mask = _read(31, 5.0, 20.0)
    middle = int(np.argmax(mask.sum(axis=(1, 2))))
    few = slice(middle - 1, middle + 2)
    assert head_turn(volume.hu[few], mask[few], volume.pixel_spacing, np.array(volume.positions)[few]) is None
    assert head_turn(volume.hu, np.zeros_like(mask), volume.pixel_spacing, np.array(volume.positions)) is None
