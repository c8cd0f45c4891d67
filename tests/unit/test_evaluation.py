"""`dicomnode evaluate`: the study plan, the DICOM round trip and the command's own checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomnode.config import load_config
from dicomnode.evaluation import (
    CALIBRATION_SEED,
    HELD_OUT_SEED,
    VALIDATION_SEED,
    _through_dicom,
    cmd_evaluate,
    conditions,
    shifted_conditions,
    study_plan,
)


@pytest.fixture(scope="module")
def shipped() -> Iterator[tuple[Any, Any]]:
    """The shipped model's engine and default settings (phantoms need the train extra)."""
    pytest.importorskip("nilearn")
    from dicomnode.engines import EngineRegistry
    from dicomnode.generators.anomaly_triage import TriageSettings

    config = load_config(None)
    registry = EngineRegistry(config.engines, config.node.data_dir)
    try:
        yield registry.get("anomaly_triage"), TriageSettings.from_params(config.anomaly_triage)
    finally:
        registry.close()


def test_validation_results_are_kept_out_of_the_model_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert len({HELD_OUT_SEED, CALIBRATION_SEED, VALIDATION_SEED}) == 3
    code = cmd_evaluate(load_config(None), "anomaly_triage", 2, 0, 64, 0, write_card=True, validation=True)
    assert code == 2 and "--validation" in capsys.readouterr().out


def test_study_plan_is_mixed_in_every_prefix() -> None:
    kinds, sizes = ("a", "b", "c", "d"), ("small", "medium", "large")
    plan = list(study_plan(2 * len(kinds) * len(sizes), 100, kinds, sizes))
    assert [seed for seed, _, _ in plan] == list(range(100, 100 + len(plan)))
    assert all(kind is None and size is None for _, kind, size in plan[::2])
    lesions = [(kind, size) for _, kind, size in plan[1::2]]
    assert Counter(lesions) == Counter({(k, s): 1 for k in kinds for s in sizes})
    first_round = lesions[: len(kinds)]
    assert {k for k, _ in first_round} == set(kinds) and {s for _, s in first_round} == set(sizes)


def test_shifted_conditions_cannot_outnumber_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_evaluate(load_config(None), "anomaly_triage", 4, 6, 64, 0, write_card=False) == 2
    assert "--shifted 6" in capsys.readouterr().out


def test_only_chooses_shifted_conditions_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    _, *shifted = conditions(["canon"])
    pitched = shifted_conditions(shifted, "PITCHED")
    assert [c.head_pitch_deg for c in pitched] == [20.0, -20.0]
    assert not any(c.gantry_tilt_deg for c in pitched)
    turned = shifted_conditions(shifted, "ed 20 degrees (not")  # rolled and turned, not the others
    assert [(c.head_roll_deg, c.head_yaw_deg) for c in turned] == [(20.0, 0.0), (0.0, 20.0)]
    flat = shifted_conditions(shifted, "subdural haematomas only")
    pushing = shifted_conditions(shifted, "pushing the brain")
    for group, pushes in ((flat, False), (pushing, True)):
        assert [(c.lesion_as, c.subdural_age, c.mass_effect) for c in group] == [
            ("sdh", age, pushes) for age in ("acute", "subacute", "chronic")]
    assert [c.lossy_ratio for c in shifted_conditions(shifted, "compressed with loss")] == [5.0, 10.0, 20.0]
    assert shifted_conditions(shifted, None) == shifted
    with pytest.raises(ValueError, match=r"'sideways' names no shifted condition.*1 mm slices"):
        shifted_conditions(shifted, "sideways")
    config = load_config(None)
    assert cmd_evaluate(config, "anomaly_triage", 4, 2, 64, 0, write_card=False, only="sideways") == 2
    assert "'sideways'" in capsys.readouterr().out
    assert cmd_evaluate(config, "anomaly_triage", 4, 2, 64, 0, write_card=True, only="pitched") == 2
    assert "--only" in capsys.readouterr().out


@pytest.mark.parametrize("vendor", ["philips", "canon"])
def test_studies_reach_the_pipeline_through_their_scanners_dicom(vendor: str) -> None:
    pytest.importorskip("nilearn")
    from dicomnode.phantoms import make_study

    study = make_study(7, "ich", slice_thickness_mm=5.0, matrix=256, vendor=vendor)
    volume = _through_dicom(study)
    # philips stores unsigned from -1000 HU; canon signed with intercept 0: the same HU either way
    assert np.array_equal(volume.hu, np.maximum(study.hu, -1000 if vendor == "philips" else -32768))
    assert volume.pixel_spacing == pytest.approx(study.spacing[1:])


def test_the_evaluation_scores_lesions_as_a_flawless_generator_would(shipped: tuple[Any, Any]) -> None:
    from dicomnode.evaluation import Condition, evaluate, render

    engine, settings = shipped
    result = evaluate(engine, settings, Condition("5 mm", slice_thickness_mm=5.0), 2, HELD_OUT_SEED, 256,
                      progress=False)
    healthy, lesion = result.studies
    assert healthy.lesion is None and lesion.lesion is not None
    # scored against its own lesion-free twin, the lesion is all that differs
    assert healthy.flawless_raw_ml == 0.0 and lesion.flawless_raw_ml > 0.0
    from dicomnode.generators.anomaly_triage import model_window, score_volume
    from dicomnode.phantoms import make_pair

    study, twin = make_pair(HELD_OUT_SEED + 1, lesion.lesion, slice_thickness_mm=5.0, matrix=256,
                            lesion_size=lesion.size)
    assert twin is not None
    window = model_window(engine)
    flawless = np.clip(twin, *window).astype(np.float32)
    expected = score_volume(_through_dicom(study), flawless, window, settings)
    assert lesion.flawless_raw_ml == pytest.approx(expected.raw_ml)
    assert lesion.flawless_raw_ml != lesion.raw_ml
    labels, scores = result.flawless_scores()
    assert list(labels) == [False, True] and list(scores) == [healthy.raw_ml, lesion.flawless_raw_ml]
    assert list(result.flawless_scores(healthy_perfect=True)[1]) == [0.0, lesion.flawless_raw_ml]
    text = render([result], settings, engine, 256)
    assert "Flawless generator" in text and "the most this score can reach" in text
    assert "0 of 1 lesions leave no evidence" in text
    assert "flawless generator 1.000" in text


def test_rendering_ahead_in_a_worker_gives_the_same_evaluation(shipped: tuple[Any, Any]) -> None:
    from dicomnode.evaluation import Condition, calibrate, evaluate

    engine, settings = shipped
    # The noise condition draws from the evaluation's own generator between studies.
    condition = Condition("noise", slice_thickness_mm=5.0, extra_noise_hu=8.0)
    here, ahead = (evaluate(engine, settings, condition, 3, HELD_OUT_SEED, 256, progress=False,
                            render_workers=workers) for workers in (0, 1))
    assert [s.raw_ml for s in here.studies] == [s.raw_ml for s in ahead.studies]
    assert [s.flawless_raw_ml for s in here.studies] == [s.flawless_raw_ml for s in ahead.studies]
    assert [s.lesion for s in here.studies] == [None, "ich", None]
    for a, b in zip(here.pixel_scores, ahead.pixel_scores, strict=True):
        np.testing.assert_array_equal(a, b)
    assert calibrate(engine, settings, 1, 256, render_workers=1) == calibrate(engine, settings, 1, 256)


def test_calibration_heads_are_rendered_at_the_matrix_scanners_send() -> None:
    from dicomnode.cli import _parser
    from dicomnode.evaluation import CALIBRATION_MATRIX

    assert CALIBRATION_MATRIX == 512
    plain = _parser().parse_args(["evaluate", "anomaly_triage", "--calibrate", "120", "--matrix", "256"])
    assert (plain.matrix, plain.calibration_matrix) == (256, CALIBRATION_MATRIX)
    chosen = _parser().parse_args(
        ["evaluate", "anomaly_triage", "--calibrate", "3", "--calibration-matrix", "128"])
    assert chosen.calibration_matrix == 128


def test_a_prone_patient_is_scored_as_the_same_patient_supine(shipped: tuple[Any, Any]) -> None:
    from dicomnode.evaluation import Condition, evaluate

    engine, settings = shipped
    supine, prone = (evaluate(engine, settings, Condition(position, slice_thickness_mm=5.0,
                                                            patient_position=position),
                              2, HELD_OUT_SEED, 256, progress=False) for position in ("HFS", "HFP"))
    assert [s.raw_ml for s in prone.studies] == pytest.approx([s.raw_ml for s in supine.studies], rel=1e-5)
    assert supine.studies[1].raw_ml > 0
    # the lesion-free twin is turned as the stored slices are: the same flawless score
    assert prone.studies[1].flawless_raw_ml == pytest.approx(supine.studies[1].flawless_raw_ml, rel=1e-5)
    # the lesion masks are turned as the stored slices are: the same overlap with the anomaly map
    assert prone.dice_sums == pytest.approx(supine.dice_sums, rel=1e-5)
    assert supine.dice_sums.max() > 0
    with pytest.raises(ValueError, match="FFS is not head first"):
        Condition("feet first", patient_position="FFS")


def test_contrast_enhanced_series_are_counted_as_refused(shipped: tuple[Any, Any]) -> None:
    from dicomnode.evaluation import Condition, evaluate, render

    engine, settings = shipped
    plain, enhanced = (evaluate(engine, settings, Condition(name, slice_thickness_mm=5.0, contrast_hu=hu),
                                2, HELD_OUT_SEED, 256, progress=False)
                       for name, hu in (("plain", None), ("contrast", 150.0)))
    assert (plain.refused, enhanced.refused) == (0, 2)
    # Scored anyway: read as non-contrast, the healthy head's vessels are the evidence the check prevents.
    assert enhanced.studies[0].lesion is None and enhanced.studies[0].raw_ml > 10 * plain.studies[0].raw_ml
    assert "2 of these series the node refuses" in render([plain, enhanced], settings, engine, 256)


def test_series_compressed_with_loss_too_hard_are_counted_as_refused(shipped: tuple[Any, Any]) -> None:
    from dicomnode.evaluation import Condition, evaluate

    engine, settings = shipped
    mild, hard = (evaluate(engine, settings, Condition(f"{r:g}:1", slice_thickness_mm=5.0, lossy_ratio=r),
                           2, HELD_OUT_SEED, 256, progress=False) for r in (4.0, 40.0))
    assert (mild.refused, hard.refused) == (0, 2)
    assert [s.lesion for s in hard.studies] == [s.lesion for s in mild.studies]  # scored anyway, paired


def _with_burr_hole(hu: np.ndarray, slices: np.ndarray, towards: tuple[float, float], width_mm: float,
                    pixel_mm: float) -> np.ndarray:
    """The skull opened (bone and its rim become 40 HU soft tissue) in the direction of `towards`
    (row, column) from the image centre, `width_mm` wide, on these slices."""
    out = hu.astype(np.float32)
    centre = (hu.shape[1] - 1) / 2.0, (hu.shape[2] - 1) / 2.0
    yy, xx = np.mgrid[:hu.shape[1], :hu.shape[2]]
    angle = np.arctan2(yy - centre[0], xx - centre[1])
    aim = np.arctan2(towards[0] - centre[0], towards[1] - centre[1])
    for k in slices:
        bone = out[k] > 300
        radius = float(np.hypot(yy - centre[0], xx - centre[1])[bone].mean())
        half = width_mm / pixel_mm / 2.0 / radius
        sector = (np.abs(np.angle(np.exp(1j * (angle - aim)))) < half) & (out[k] > 150)
        out[k][sector] = 40.0
    return out


def test_a_subdural_under_a_burr_hole_is_still_found(shipped: tuple[Any, Any]) -> None:
    """Patients are scanned for a new bleed after a subdural is drained through burr holes;
    where the skull is open, its bone's convex hull stands for it (it scored 0 without)."""
    from dataclasses import replace

    from dicomnode.generators.anomaly_triage import analyse_volume, read_series
    from dicomnode.phantoms import make_study

    engine, settings = shipped
    for seed, lesion in ((4, "sdh"), (5, None)):
        study = make_study(seed, lesion, slice_thickness_mm=5.0, matrix=256, lesion_size="medium")
        volume = _through_dicom(study)
        if lesion:
            slices = np.flatnonzero(study.lesion_mask.any(axis=(1, 2)))
            towards = tuple(np.argwhere(study.lesion_mask[slices[len(slices) // 2]]).mean(axis=0))
        else:
            slices, towards = np.arange(10, 20), (128.0, 40.0)
        opened = replace(volume, hu=_with_burr_hole(volume.hu, slices, towards, 20.0, study.spacing[1]))
        score = analyse_volume(read_series(opened, settings).volume, engine, settings).score
        if lesion:
            assert score >= settings.urgent
        else:
            assert score < settings.urgent


def test_a_head_cut_by_a_narrow_field_of_view_is_scored_whole(shipped: tuple[Any, Any]) -> None:
    """A 170 mm field of view cuts the skull's ring at the image's edge: it was masked (and
    scored) on a third of the brain, and a haemorrhage there scored 0."""
    from dicomnode.generators.anomaly_triage import analyse_volume, read_series
    from dicomnode.phantoms import make_study

    engine, settings = shipped
    for seed, lesion in ((9, "ich"), (5, None)):
        study = make_study(seed, lesion, slice_thickness_mm=5.0, matrix=256, field_of_view_mm=170.0,
                           lesion_size="medium")
        score = analyse_volume(read_series(_through_dicom(study), settings).volume, engine, settings).score
        if lesion:
            assert score >= settings.critical
        else:
            assert score < settings.urgent


def test_writing_into_the_card_keeps_the_commentary_around_the_tables(tmp_path: Path) -> None:
    from dicomnode.evaluation import write_into_card

    card = tmp_path / "card.md"
    card.write_text("# model\n\n## Evaluation\n\nold tables\n\n## Limits\n\n- phantoms only\n")
    write_into_card(card, "tables of run 1")  # a card without generated tables yet
    assert "old tables" not in card.read_text() and "tables of run 1" in card.read_text()
    card.write_text(card.read_text().replace("## Limits", "How to read them: by hand.\n\n## Limits"))
    write_into_card(card, "tables of run 2")
    text = card.read_text()
    assert "tables of run 1" not in text and "tables of run 2" in text
    assert text.index("tables of run 2") < text.index("How to read them: by hand.") < text.index("## Limits")
    assert text.endswith("- phantoms only\n")
