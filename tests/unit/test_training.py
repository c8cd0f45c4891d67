"""The pseudo-healthy model: a few training steps on tiny inputs, checkpoints, ONNX parity, manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("scipy")

from dicomnode.engines.manifest import file_sha256, load_manifest  # noqa: E402
from dicomnode.phantoms.lesions import LESION_KINDS  # noqa: E402
from dicomnode.phantoms.volume import FIELD_OF_VIEW_MM  # noqa: E402
from dicomnode.training.data import SlicePool, StudySlices, window  # noqa: E402
from dicomnode.training.export import check_parity, export_engine, export_onnx, manifest_dict  # noqa: E402
from dicomnode.training.model import (  # noqa: E402
    HU_WINDOW,
    PseudoHealthyUNet,
    build,
    load_weights,
    parameter_count,
)
from dicomnode.training.train import CHECKPOINT, LOSS_LOG, TrainConfig, loss_fn, train  # noqa: E402
from tests.support.training import tiny_pool  # noqa: E402


def _tiny_config() -> TrainConfig:
    return TrainConfig(crop=32, base_channels=4, initial_studies=1, refresh_every=10_000, checkpoint_every=2)


def test_window_matches_the_manifest_contract() -> None:
    hu = np.array([-1000.0, HU_WINDOW[0], 50.0, HU_WINDOW[1], 1500.0])
    assert np.allclose(
        window(hu), [0.0, 0.0, (50.0 - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0]), 1.0, 1.0]
    )
    # Both hyperdense blood and a hypodense infarct are inside the window.
    assert HU_WINDOW[0] < 15.0 and HU_WINDOW[1] > 90.0


def test_shipped_architecture_size() -> None:
    model = build()
    assert 300_000 <= parameter_count(model) <= 2_000_000
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        y = model.eval()(x)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_three_training_steps_checkpoint_and_resume(tmp_path: Path) -> None:
    result = train(
        tmp_path, steps=3, batch_size=2, seed=1, config=_tiny_config(), pool=tiny_pool(), progress=False
    )
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert (tmp_path / CHECKPOINT).is_file()
    assert len((tmp_path / LOSS_LOG).read_text().splitlines()) == 3
    resumed = train(
        tmp_path, steps=4, batch_size=2, seed=1, config=_tiny_config(), pool=tiny_pool(), progress=False
    )
    assert len(resumed.losses) == 1  # picked up at step 3


def test_training_reduces_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = PseudoHealthyUNet(base=4)
    pool = tiny_pool()
    x, y, m = (torch.from_numpy(a) for a in pool.batch(4, 32))
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(model(x), y, m, 4.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PseudoHealthyUNet(base=4).eval()
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path, size=64)
    assert check_parity(model, path, batch=3, size=64) < 1e-4


def test_mirrored_model_exports_to_onnx_with_one_input_channel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PseudoHealthyUNet(base=4, mirrored=True).eval()
    path = tmp_path / "mirrored.onnx"
    export_onnx(model, path, size=64)
    assert check_parity(model, path, batch=2, size=64) < 1e-4


def test_mirrored_model_starts_as_the_single_channel_one_and_sees_the_other_side() -> None:
    torch.manual_seed(0)
    single = PseudoHealthyUNet(base=4).eval()
    mirrored = PseudoHealthyUNet(base=4, mirrored=True).eval()
    load_weights(mirrored, single.state_dict())
    x = torch.rand(2, 1, 32, 48)
    with torch.inference_mode():
        assert torch.allclose(single(x), mirrored(x))
        with torch.no_grad():
            mirrored.down[0][0].weight[:, 1].fill_(0.1)
        changed = x.clone()
        changed[..., :, :8] = 0.9  # the left edge, which the mirror shows at the right edge
        right_edge = (mirrored(changed) - mirrored(x))[..., :, -4:]
    assert float(right_edge.abs().max()) > 0


def test_full_width_crops_keep_whole_rows() -> None:
    x, y, m = tiny_pool(size=48).batch(3, 32, full_width=True)
    assert x.shape == y.shape == m.shape == (3, 1, 32, 48)


def test_export_engine_writes_a_valid_model_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = train(
        work, steps=3, batch_size=2, seed=2, config=_tiny_config(), pool=tiny_pool(), progress=False
    )
    out = tmp_path / "anomaly_triage"
    written = export_engine(
        result, out, seed=2, command="dicomnode train anomaly_triage --steps 3", work_dir=work
    )
    assert {p.name for p in written} == {"model.onnx", "model.pt", "manifest.yaml", "card.md"}
    manifest = load_manifest(out)
    assert manifest.sha256 == file_sha256(out / "model.onnx")
    assert manifest.preprocessing.hu_window == HU_WINDOW and manifest.preprocessing.normalize == "unit"
    # Without the training field of view, the node would feed a 360 mm head at a scale never trained on.
    assert manifest.preprocessing.field_of_view_mm == FIELD_OF_VIEW_MM
    assert manifest.torch_module == "dicomnode.training.model:build"
    card = (out / "card.md").read_text()
    assert "NOT FOR DIAGNOSIS" in card
    assert "## Evaluation" in card and "see `dicomnode evaluate anomaly_triage`" in card
    assert "3 steps in" in card and "min on 2 CPU cores" in card  # the hardware this run used


def test_a_checkpoint_of_another_seed_is_not_resumed(tmp_path: Path) -> None:
    train(tmp_path, steps=2, batch_size=2, seed=1, config=_tiny_config(), pool=tiny_pool(), progress=False)
    other = train(
        tmp_path, steps=2, batch_size=2, seed=2, config=_tiny_config(), pool=tiny_pool(), progress=False
    )
    assert len(other.losses) == 2  # started afresh
    assert len((tmp_path / LOSS_LOG).read_text().splitlines()) == 2


def _lesion_batch(delta_hu: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target = torch.full((1, 1, 16, 16), 0.4)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:8, 4:8] = True
    inputs = target + mask.float() * delta_hu / (HU_WINDOW[1] - HU_WINDOW[0])
    return inputs, target, mask


@pytest.mark.parametrize("delta_hu", [-10.0, 40.0])
def test_a_faint_lesion_left_in_place_costs_more_than_a_blatant_one_per_hu(delta_hu: float) -> None:
    inputs, target, mask = _lesion_batch(delta_hu)
    # An identity prediction leaves the lesion in place.
    plain = loss_fn(inputs, target, mask, 4.0)
    boosted = loss_fn(inputs, target, mask, 4.0, inputs=inputs, subtle_hu=20.0)
    if abs(delta_hu) < 20.0:
        assert float(boosted) > float(plain)  # 10 HU: weight x2
    else:
        assert torch.isclose(boosted, plain)  # 40 HU is not subtle: unchanged


def test_subtle_weighting_ignores_items_without_a_lesion() -> None:
    inputs, target, _ = _lesion_batch(-10.0)
    empty = torch.zeros_like(inputs, dtype=torch.bool)
    plain = loss_fn(inputs, target, empty, 4.0)
    assert torch.isclose(loss_fn(inputs, target, empty, 4.0, inputs=inputs, subtle_hu=20.0), plain)


def test_training_continues_from_given_weights(tmp_path: Path) -> None:
    start = PseudoHealthyUNet(base=4)
    with torch.no_grad():
        for p in start.parameters():
            p.fill_(0.01)
    weights = tmp_path / "init.pt"
    torch.save(start.state_dict(), weights)
    config = _tiny_config()
    config.init_weights, config.lr = weights, 1e-9
    result = train(tmp_path / "run", steps=1, batch_size=2, seed=1, config=config, pool=tiny_pool(),
                   progress=False)
    conv = next(result.model.parameters())
    assert torch.allclose(conv, torch.full_like(conv, 0.01), atol=1e-6)


def test_a_continued_run_records_the_command_and_data_of_its_starting_weights(tmp_path: Path) -> None:
    """The chain can be rerun, and a continuation's own studies (a few hundred) do not read as all
    it learnt from."""
    from dicomnode.training.commands import _provenance

    shipped = Path(__file__).resolve().parents[2] / "engines" / "anomaly_triage"
    command, earlier = _provenance(shipped / "model.pt")
    recorded = load_manifest(shipped).training
    assert (command, earlier) == (recorded.command, recorded.data)
    continued = manifest_dict("0" * 64, seed=1, command="dicomnode train", studies=215, continued=earlier)
    assert continued["training"]["data"].startswith("synthetic head CT phantoms")
    assert continued["training"]["data"].endswith(f"; continuing a model trained on: {earlier}")
    fresh = manifest_dict("0" * 64, seed=1, command="dicomnode train", studies=215)
    assert "continuing" not in fresh["training"]["data"]
    loose = tmp_path / "weights.pt"
    loose.write_bytes(b"not a model folder")
    command, earlier = _provenance(loose)
    assert file_sha256(loose) in command and "unrecorded" in earlier


def test_huber_loss_lets_small_healthy_errors_go_and_keeps_the_lesion_pull() -> None:
    inputs, target, mask = _lesion_batch(-10.0)
    width = HU_WINDOW[1] - HU_WINDOW[0]
    assert torch.isclose(loss_fn(inputs, target, mask, 4.0, huber_hu=0.0), loss_fn(inputs, target, mask, 4.0))

    def pulls(huber_hu: float) -> tuple[float, float]:
        """Gradient magnitude on a healthy pixel 0.5 HU off and on a lesion pixel left 10 HU off."""
        pred = (inputs + (~mask).float() * 0.5 / width).requires_grad_(True)
        loss_fn(pred, target, mask, 4.0, huber_hu=huber_hu).backward()  # type: ignore[no-untyped-call]
        grad = pred.grad.abs()[0, 0]
        return float(grad[0, 0]), float(grad[5, 5])

    l1_healthy, l1_lesion = pulls(0.0)
    huber_healthy, huber_lesion = pulls(4.0)
    assert huber_healthy == pytest.approx(l1_healthy * 0.5 / 4.0, rel=1e-3)  # quadratic below 4 HU
    assert huber_lesion == pytest.approx(l1_lesion, rel=1e-3)  # linear above it, as in L1


@pytest.fixture
def drawn_kinds(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The lesion kind of every study the pool renders (rendering itself is skipped)."""
    import dicomnode.training.data as data

    drawn: list[str | None] = []

    def fake_render(seed: int, lesion: str | None, matrix: int = 256, **_: object) -> StudySlices:
        drawn.append(lesion)
        empty = np.zeros((1, 8, 8), dtype=np.float16)
        return StudySlices(empty, empty, empty.astype(bool), lesion)

    monkeypatch.setattr(data, "render", fake_render)
    return drawn


def test_kind_weights_steer_which_lesions_the_pool_renders(drawn_kinds: list[str | None]) -> None:
    pool = SlicePool(seed=0, capacity=4, healthy_fraction=0.0, kind_weights={"ich": 0, "sdh": 0, "edh": 0,
                                                                              "sah": 0, "mass": 0})
    for _ in range(20):
        pool.add()
    assert drawn_kinds == ["infarct"] * 20


def test_kind_weights_name_what_is_wrong() -> None:
    from dicomnode.training.commands import format_kind_weights, parse_kind_weights

    assert parse_kind_weights("infarct=3, mass=2") == {"infarct": 3.0, "mass": 2.0}
    assert format_kind_weights({"infarct": 3.0, "mass": 2.5}) == "infarct=3,mass=2.5"
    for bad, named in [("infarct", "KIND=WEIGHT"), ("stroke=2", "stroke"), ("mass=big", "mass"),
                       ("mass=-1", "negative"), ("ich=0,sdh=0,edh=0,sah=0,infarct=0,mass=0", "positive")]:
        with pytest.raises(ValueError, match=named):
            parse_kind_weights(bad)


def test_the_default_pool_draws_kinds_as_the_shipped_runs_did(drawn_kinds: list[str | None]) -> None:
    pool = SlicePool(seed=0, capacity=4)
    for _ in range(12):
        pool.add()
    # The uniform draw of model 0.2.0's run (seed 0), so `dicomnode train` still reproduces it.
    rng = np.random.default_rng(0)
    expected = []
    for _ in range(12):
        expected.append(None if rng.random() < 0.15 else LESION_KINDS[int(rng.integers(6))])
    assert drawn_kinds == expected


def test_the_card_describes_the_loss_and_data_mix_the_run_used() -> None:
    from dicomnode.training.export import _loss_text

    assert _loss_text(TrainConfig()) == "L1, weighted x5 inside the (dilated) lesion mask"
    text = _loss_text(TrainConfig(huber_hu=4.0, kind_weights={"infarct": 3.0, "mass": 2.0}))
    assert text.startswith("Huber (errors under 4 HU cost quadratically")
    assert "infarct x3, mass x2 (others x1)" in text
    assert "texture" not in text
    assert "noise_grain_px 0.5-2.4" in _loss_text(TrainConfig(vary_texture=True))


def test_varied_texture_keeps_the_study_and_draws_inside_its_ranges() -> None:
    from dicomnode.training.data import TEXTURE_RANGES, random_texture, render

    textures = [random_texture(np.random.default_rng(seed)) for seed in range(200)]
    for key, (low, high) in TEXTURE_RANGES.items():
        values = [getattr(t, key)[0] if key == "noise_hu" else getattr(t, key) for t in textures]
        assert low <= min(values) and max(values) <= high
        assert max(values) - min(values) > 0.8 * (high - low)  # the whole range is drawn
    plain, varied = render(11, "ich"), render(11, "ich", vary_texture=True)
    assert np.array_equal(plain.masks, varied.masks)  # same head, pose, slices and lesion
    assert not np.array_equal(plain.inputs, varied.inputs)  # another texture
    from scipy import ndimage

    near_lesion = ndimage.binary_dilation(varied.masks.any(axis=0), iterations=20)
    far = np.broadcast_to(~near_lesion, varied.masks.shape)
    assert np.array_equal(varied.inputs[far], varied.targets[far])  # the twin shares the noise


def test_more_healthy_slices_keep_the_lesion_and_add_anatomy() -> None:
    from dicomnode.training.data import render
    from dicomnode.training.export import _loss_text

    plain, wide = render(11, "ich"), render(11, "ich", healthy_slices=4)
    assert wide.inputs.shape[0] > plain.inputs.shape[0]
    assert wide.masks.sum() == plain.masks.sum()  # every lesion slice in both
    assert "4 healthy slices from each third" in _loss_text(TrainConfig(healthy_slices=4))


def test_scanner_matrix_studies_are_rendered_at_512_and_halved_as_the_node_halves() -> None:
    from dicomnode.generators.ct import resample_slices
    from dicomnode.phantoms.volume import make_pair
    from dicomnode.training.data import THICKNESSES, at_scanner_matrix, render
    from dicomnode.training.export import _loss_text

    plain, halved = render(11, "ich"), render(11, "ich", scanner_matrix=True)
    assert halved.inputs.shape == plain.inputs.shape and halved.masks.any()
    # The same lesion slices, on the model grid, as the node sees a 512 series of the study.
    thickness = float(np.random.default_rng(11).choice(THICKNESSES))  # render's first draw
    study, twin = make_pair(11, "ich", slice_thickness_mm=thickness, matrix=512, slices="lesion")
    assert twin is not None
    expected = window(resample_slices(np.clip(study.hu, *HU_WINDOW), (256, 256))).astype(np.float16)
    assert np.array_equal(halved.inputs, expected)
    assert not np.array_equal(halved.inputs, plain.inputs)  # another rendering, not a copy
    # Which studies: from the seed alone, about the share asked for, none at 0.
    chosen = [at_scanner_matrix(seed, 0.25) for seed in range(2000)]
    assert 0.22 < np.mean(chosen) < 0.28
    assert chosen == [at_scanner_matrix(seed, 0.25) for seed in range(2000)]
    assert not any(at_scanner_matrix(seed, 0.0) for seed in range(2000))
    assert "25% of studies rendered at 512x512" in _loss_text(TrainConfig(scanner_matrix_share=0.25))


def _render_calls(monkeypatch: pytest.MonkeyPatch, pools: list[SlicePool], studies: int) -> list[
        dict[str, object]]:
    """The render calls (seed and options) each pool makes for its first `studies` studies."""
    from dicomnode.training import data

    calls: list[dict[str, object]] = []

    def fake_render(seed: int, lesion: str | None, **options: object) -> StudySlices:
        calls.append({"seed": seed, "lesion": lesion, **options})
        empty = np.zeros((1, 8, 8), dtype=np.float16)
        return StudySlices(empty, empty, empty.astype(bool), lesion)

    monkeypatch.setattr(data, "render", fake_render)
    for pool in pools:
        for _ in range(studies):
            pool.add()
    return calls


def test_a_pool_without_scanner_matrix_studies_renders_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    pools = [SlicePool(seed=0, capacity=4, scanner_matrix_share=share) for share in (0.0, 0.5)]
    calls = _render_calls(monkeypatch, pools, 40)
    plain, mixed = calls[:40], calls[40:]
    assert not any(c["scanner_matrix"] for c in plain)
    assert 8 < sum(bool(c["scanner_matrix"]) for c in mixed) < 32


@pytest.mark.parametrize(("option", "bad", "shown", "config_field", "value"), [
    ("scanner_matrix_share", 1.5, "--scanner-matrix-share 1.5", "scanner_matrix_share", 0.5),
    ("extra_pitch", 40.0, "--extra-pitch 40", "extra_pitch_deg", 10.0),
    ("older_subdurals", 1.2, "--older-subdurals 1.2", "older_subdurals", 0.5),
])
def test_a_data_option_is_checked_and_keys_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, bad: float, shown: str,
    config_field: str, value: float,
) -> None:
    from dicomnode.training.commands import cmd_train

    work = tmp_path / "work"
    assert cmd_train("anomaly_triage", tmp_path / "anomaly_triage", steps=1, seed=0, work_dir=work,
                     **{option: bad}) == 2  # type: ignore[arg-type]
    assert shown in capsys.readouterr().out and not work.exists()
    train(tmp_path, steps=2, batch_size=2, seed=1, config=_tiny_config(), pool=tiny_pool(), progress=False)
    config = _tiny_config()
    setattr(config, config_field, value)
    other = train(tmp_path, steps=2, batch_size=2, seed=1, config=config, pool=tiny_pool(), progress=False)
    assert len(other.losses) == 2  # started afresh


def test_healthy_slices_must_be_at_least_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomnode.training.commands import cmd_train

    work = tmp_path / "work"
    assert cmd_train("anomaly_triage", tmp_path / "anomaly_triage", steps=1, seed=0, work_dir=work,
                     healthy_slices=0) == 2
    assert "--healthy-slices 0" in capsys.readouterr().out and not work.exists()


def test_a_checkpoint_of_a_run_with_other_healthy_slices_is_not_resumed(tmp_path: Path) -> None:
    train(tmp_path, steps=2, batch_size=2, seed=1, config=_tiny_config(), pool=tiny_pool(), progress=False)
    config = _tiny_config()
    config.healthy_slices = 3
    other = train(tmp_path, steps=2, batch_size=2, seed=1, config=config, pool=tiny_pool(), progress=False)
    assert len(other.losses) == 2  # started afresh


def test_a_checkpoint_of_a_run_without_varied_texture_is_not_resumed(tmp_path: Path) -> None:
    train(tmp_path, steps=2, batch_size=2, seed=1, config=_tiny_config(), pool=tiny_pool(), progress=False)
    config = _tiny_config()
    config.vary_texture = True
    other = train(tmp_path, steps=2, batch_size=2, seed=1, config=config, pool=tiny_pool(), progress=False)
    assert len(other.losses) == 2  # started afresh


def test_train_refuses_an_output_folder_the_zoo_cannot_find_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicomnode.training.commands import cmd_train

    work = tmp_path / "work"
    assert cmd_train("anomaly_triage", tmp_path / "candidate", steps=1, seed=0, work_dir=work) == 2
    assert "must be named anomaly_triage" in capsys.readouterr().out
    assert not work.exists()  # nothing was trained
    missing = tmp_path / "no.pt"
    assert cmd_train("anomaly_triage", tmp_path / "anomaly_triage", steps=1, seed=0, init=missing) == 2
    assert "no such weights file" in capsys.readouterr().out


def test_render_workers_give_the_same_studies_whatever_their_number() -> None:
    def first_studies(workers: int) -> list[StudySlices]:
        pool = SlicePool(seed=5, capacity=8, workers=workers)
        try:
            for _ in range(2):
                pool.add()
        finally:
            pool.close()
        return list(pool.studies)

    one, two = first_studies(1), first_studies(2)
    assert [s.kind for s in one] == [s.kind for s in two]
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.masks, b.masks)


def test_training_on_a_device_torch_lacks_is_refused_by_name(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    config = _tiny_config()
    config.device = "cuda"
    with pytest.raises(RuntimeError, match="'cuda'"):
        train(tmp_path, steps=1, batch_size=2, seed=1, config=config, pool=tiny_pool(), progress=False)


def test_extra_pitch_is_drawn_per_study_from_its_seed_within_the_limit() -> None:
    from dicomnode.training.data import extra_pitch

    angles = [extra_pitch(seed, 18.0) for seed in range(2000)]
    assert angles == [extra_pitch(seed, 18.0) for seed in range(2000)]  # from the seed alone
    assert -18.0 <= min(angles) < -16.0 and 16.0 < max(angles) <= 18.0  # the whole range
    assert abs(float(np.mean(angles))) < 1.0  # both ways, flexed and extended
    assert all(extra_pitch(seed, 0.0) == 0.0 for seed in range(100))
    with pytest.raises(ValueError, match="31"):
        extra_pitch(0, 31.0)
    from dicomnode.training.export import _loss_text

    assert "pitched a further uniform ±18 degrees" in _loss_text(TrainConfig(extra_pitch_deg=18.0))


def test_a_pool_without_extra_pitch_renders_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomnode.training.data import extra_pitch

    pools = [SlicePool(seed=0, capacity=4, extra_pitch_deg=limit) for limit in (0.0, 18.0)]
    calls = _render_calls(monkeypatch, pools, 20)
    plain, pitched = calls[:20], calls[20:]
    assert not any("head_pitch_deg" in c for c in plain)  # the render calls of earlier runs
    assert [c["seed"] for c in plain] == [c["seed"] for c in pitched]  # the same studies, pitched
    assert all(c["head_pitch_deg"] == extra_pitch(int(str(c["seed"])), 18.0) for c in pitched)


def test_older_subdurals_are_drawn_per_study_from_its_seed() -> None:
    from dicomnode.training.data import subdural_age

    ages = [subdural_age(seed, 0.6) for seed in range(3000)]
    assert ages == [subdural_age(seed, 0.6) for seed in range(3000)]  # from the seed alone
    assert 0.37 < ages.count("acute") / 3000 < 0.43
    assert 0.27 < ages.count("subacute") / 3000 < 0.33 and 0.27 < ages.count("chronic") / 3000 < 0.33
    assert {subdural_age(seed, 0.0) for seed in range(200)} == {"acute"}
    with pytest.raises(ValueError, match=r"within 0-1, got 1\.5"):
        subdural_age(0, 1.5)
    from dicomnode.training.export import _loss_text

    assert "40% of subdural haematomas days old" in _loss_text(TrainConfig(older_subdurals=0.4))


def test_a_pool_without_older_subdurals_renders_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomnode.training.data import subdural_age

    pools = [SlicePool(seed=0, capacity=4, older_subdurals=share) for share in (0.0, 1.0)]
    calls = _render_calls(monkeypatch, pools, 40)
    plain, aged = calls[:40], calls[40:]
    assert not any("subdural_age" in c for c in plain)  # the render calls of earlier runs
    assert [c["seed"] for c in plain] == [c["seed"] for c in aged]
    subdurals = [c for c in aged if c["lesion"] == "sdh"]
    assert subdurals and all(c["subdural_age"] == subdural_age(int(str(c["seed"])), 1.0) != "acute"
                             for c in subdurals)
    assert not any("subdural_age" in c for c in aged if c["lesion"] != "sdh")


def test_a_pitched_training_study_is_its_scan_with_the_head_pitched() -> None:
    from dicomnode.phantoms.volume import make_pair
    from dicomnode.training.data import THICKNESSES, render

    pitched = render(11, "ich", head_pitch_deg=15.0)
    thickness = float(np.random.default_rng(11).choice(THICKNESSES))
    study, twin = make_pair(11, "ich", slice_thickness_mm=thickness, matrix=256, slices="lesion",
                            head_pitch_deg=15.0)
    assert twin is not None
    assert np.array_equal(pitched.inputs, window(study.hu).astype(np.float16))
    assert np.array_equal(pitched.targets, window(twin).astype(np.float16))
    assert pitched.masks.any()  # the lesion is still in the slices drawn
    unpitched = render(11, "ich")
    assert pitched.inputs.shape != unpitched.inputs.shape or not np.array_equal(
        pitched.inputs, unpitched.inputs)
