"""`dicomnode calibrate anomaly_triage`: scores a site's normal series as the node does and fits the scale."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomnode.cli import main
from dicomnode.config import load_config
from dicomnode.engines import EngineRegistry
from dicomnode.generators.anomaly_triage import TriageSettings, analyse_volume, fit_calibration_ml

SEEDS = (21, 22, 23)


@pytest.fixture(scope="module")
def normal_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """Three healthy phantom series and a localiser in one folder, and the node's raw score of each."""
    pytest.importorskip("nilearn")
    from dicomnode.evaluation import _through_dicom
    from dicomnode.phantoms import make_study, write_series

    folder = tmp_path_factory.mktemp("normals")
    config = load_config(None)
    registry = EngineRegistry(config.engines, config.node.data_dir)
    settings = TriageSettings.from_params(config.anomaly_triage)
    raws = []
    try:
        engine = registry.get(settings.model)
        for seed in SEEDS:
            study = make_study(seed, None, slice_thickness_mm=5.0, matrix=256)
            write_series(study, folder / f"study{seed}")
            raws.append(analyse_volume(_through_dicom(study), engine, settings).raw_ml)
    finally:
        registry.close()
    scout = dcmread(next((folder / f"study{SEEDS[0]}").iterdir()))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SeriesInstanceUID = generate_uid()
    scout.SOPInstanceUID = generate_uid()
    (folder / "scout").mkdir()
    scout.save_as(folder / "scout" / "scout.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    return folder, raws


def test_fits_the_scale_to_the_normal_series_it_could_score(
    normal_series: tuple[Path, list[float]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, raws = normal_series
    assert main(["calibrate", "anomaly_triage", str(folder), "--min-series", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 series scored" in out and "model anomaly_triage " in out
    assert re.search(r"not scored, the series is a localizer", out)
    fitted = float(re.findall(r"calibration_ml: ([0-9.]+)", out)[-1])
    expected = fit_calibration_ml(raws, TriageSettings())
    assert fitted == pytest.approx(expected, abs=5e-4)
    scored = [line for line in out.splitlines() if re.match(r"\s*\d+\.\d{3}\s", line)]
    printed = sorted(float(line.split()[0]) for line in scored)
    assert printed == pytest.approx(sorted(raws), abs=5e-4)


def test_refuses_to_fit_from_too_few_series(
    normal_series: tuple[Path, list[float]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = normal_series
    assert main(["calibrate", "anomaly_triage", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "3 normal series scored; at least 20 are needed" in out
    assert "configuration:" not in out


def test_a_folder_without_dicom_is_an_error_that_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    assert main(["calibrate", "anomaly_triage", str(tmp_path)]) == 1
    assert f"no DICOM series under {tmp_path}" in capsys.readouterr().out


def test_the_fit_puts_the_95th_percentile_at_urgent() -> None:
    raws = [float(r) for r in range(1, 101)]
    fitted = fit_calibration_ml(raws, TriageSettings(urgent=40.0))
    r95 = 95.05  # numpy's linear interpolation between the 95th and 96th of 100 values
    assert 100.0 * (1.0 - math.exp(-r95 / fitted)) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="0 < urgent < 100"):
        fit_calibration_ml(raws, TriageSettings(urgent=0.0, critical=50.0))


def test_a_study_with_two_scored_series_is_pointed_out(
    normal_series: tuple[Path, list[float]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = normal_series
    original = folder / f"study{SEEDS[0]}"
    series_uid = generate_uid()
    for path in original.iterdir():  # the same study reconstructed again: another series
        ds = dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.save_as(tmp_path / path.name)
    assert main(["calibrate", "anomaly_triage", str(original), str(tmp_path), "--min-series", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 series scored" in out
    assert "note: 1 study gave more than one scored series" in out
