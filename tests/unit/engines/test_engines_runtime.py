"""ONNX Runtime against the torch reference, batching over odd slice counts, one job at a time."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dicomnode.config import EnginesConfig
from dicomnode.engines import EngineRegistry
from dicomnode.engines.batching import batch_slices, bounded_batch_size, run_batched
from dicomnode.engines.engine import Engine
from dicomnode.engines.errors import (
    BackendUnavailableError,
    ChecksumError,
    EngineRunError,
    ManifestError,
    ModelNotFoundError,
)
from dicomnode.engines.manifest import Manifest
from dicomnode.engines.onnxruntime_backend import OnnxRuntimeBackend
from dicomnode.engines.torch_reference import TorchRunner, load_torch_model
from dicomnode.engines.zoo import find_model

# FP32 on CPU: ONNX Runtime and torch differ only by summation order.
ATOL = 1e-5


def registry(zoo: Path, tmp_path: Path, **overrides: object) -> EngineRegistry:
    config = EnginesConfig(models_dir=zoo, backend="onnxruntime", **overrides)  # type: ignore[arg-type]
    return EngineRegistry(config, tmp_path / "var")


def torch_reference(zoo: Path, name: str, slices: np.ndarray) -> dict[str, np.ndarray]:
    entry = find_model(zoo, name)
    manifest, _ = entry.require()
    runner = TorchRunner(load_torch_model(manifest, entry.directory), manifest)
    return runner.run({"image": slices})


@pytest.mark.parametrize("count", [1, 3, 7, 8, 9, 17])
def test_onnxruntime_matches_torch_across_odd_slice_counts(
    zoo: Path, tmp_path: Path, count: int
) -> None:
    reg = registry(zoo, tmp_path, batch_size=4)
    slices = np.random.default_rng(count).random((count, 1, 24, 40), dtype=np.float32)
    out = reg.get("tiny").run(slices)
    ref = torch_reference(zoo, "tiny", slices)
    assert out["output"].shape == (count, 1, 24, 40)
    assert out["score"].shape == (count,)
    for name in ("output", "score"):
        np.testing.assert_allclose(out[name], ref[name], atol=ATOL, rtol=0)
    reg.close()


def test_fixed_batch_model_pads_the_last_batch(zoo: Path, tmp_path: Path) -> None:
    reg = registry(zoo, tmp_path, batch_size=8)
    slices = np.random.default_rng(0).random((7, 32, 32), dtype=np.float32)
    out = reg.get("tiny4").run(slices)  # channel axis added; batches of exactly 4
    ref = torch_reference(zoo, "tiny4", slices[:, None])
    assert out["output"].shape == (7, 1, 32, 32)
    np.testing.assert_allclose(out["output"], ref["output"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["score"], ref["score"], atol=ATOL, rtol=0)


def test_batch_slices_and_bounds() -> None:
    assert [(s.start, s.stop) for s in batch_slices(9, 4)] == [(0, 4), (4, 8), (8, 9)]
    assert list(batch_slices(0, 4)) == []
    assert bounded_batch_size(8, 64, bytes_per_slice=100, max_batch_bytes=350) == 3
    assert bounded_batch_size(8, 2, bytes_per_slice=100, max_batch_bytes=None) == 2
    assert bounded_batch_size(8, 64, bytes_per_slice=1000, max_batch_bytes=10) == 1
    with pytest.raises(ValueError):
        list(batch_slices(3, 0))


def test_run_batched_pads_and_trims() -> None:
    seen: list[int] = []

    def double(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(batch["x"].shape[0])
        return {"y": batch["x"] * 2}

    out = run_batched(double, {"x": np.arange(5.0)}, 2, min_batch=2)
    np.testing.assert_array_equal(out["y"], [0, 2, 4, 6, 8])
    assert seen == [2, 2, 2]
    with pytest.raises(EngineRunError, match="disagree"):
        run_batched(double, {"x": np.zeros(2), "z": np.zeros(3)}, 2)


class RecordingBackend:
    """Counts batches and concurrent calls; stands in for a GPU backend."""

    name = "recording"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.active = 0
        self.max_active = 0
        self.loads = 0
        self._guard = threading.Lock()

    def load(self, manifest: Manifest, onnx_path: Path) -> None:
        self.loads += 1

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        with self._guard:
            self.active -= 1
            self.batches.append(batch["image"].shape[0])
        return {"output": batch["image"], "score": batch["image"].mean(axis=(1, 2, 3))}

    def close(self) -> None:
        pass


def _engine(zoo: Path, backend: RecordingBackend, **kwargs: int) -> Engine:
    manifest, onnx_path = find_model(zoo, "tiny").require()
    engine = Engine(manifest, onnx_path, backend, **kwargs)
    engine.load(warmup=False)
    return engine


def test_memory_bound_limits_batch(zoo: Path) -> None:
    backend = RecordingBackend()
    slice_bytes = 64 * 64 * 4 * 3  # input plus two outputs per slice
    engine = _engine(zoo, backend, batch_size=8, max_batch_bytes=3 * slice_bytes)
    engine.run(np.zeros((7, 1, 64, 64), np.float32))
    assert backend.batches == [3, 3, 1]


def test_one_job_at_a_time_per_engine(zoo: Path) -> None:
    backend = RecordingBackend(delay=0.01)
    engine = _engine(zoo, backend, batch_size=2)
    errors: list[BaseException] = []

    def series() -> None:
        try:
            out = engine.run(np.ones((5, 1, 16, 16), np.float32))
            assert out["output"].shape == (5, 1, 16, 16)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=series) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert backend.max_active == 1
    assert sorted(backend.batches) == sorted([2, 2, 1] * 4)


def test_inputs_are_checked_against_the_manifest(zoo: Path) -> None:
    engine = _engine(zoo, RecordingBackend())
    with pytest.raises(EngineRunError, match="needs 4 dims"):
        engine.run(np.zeros((2, 2, 1, 16, 16), np.float32))
    with pytest.raises(EngineRunError, match=r"axis W is 4, the model takes 8\.\.512"):
        engine.run(np.zeros((2, 1, 16, 4), np.float32))
    with pytest.raises(EngineRunError, match="unknown inputs"):
        engine.run({"image": np.zeros((1, 1, 16, 16)), "mask": np.zeros(1)})
    engine.close()
    with pytest.raises(EngineRunError, match="not loaded"):
        engine.run(np.zeros((1, 1, 16, 16), np.float32))


def test_auto_backend_choice_is_logged(zoo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = EngineRegistry(EnginesConfig(models_dir=zoo, load="first_use"), tmp_path)
    with caplog.at_level(logging.INFO, logger="dicomnode.engines.registry"):
        assert reg.start() == []
    choice = reg.backend
    if choice.name == "onnxruntime":
        assert "TensorRT not usable" in choice.reason
    assert f"engine backend: {choice.name}" in caplog.text
    assert reg.loaded() == {}


def test_startup_loads_and_warms_every_valid_model(zoo: Path, tmp_path: Path) -> None:
    onnx = zoo / "tiny4" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1])
    reg = registry(zoo, tmp_path, load="startup")
    engines = reg.start()
    assert [e.name for e in engines] == ["tiny"]
    assert reg.get("tiny") is engines[0]  # loaded once, reused
    with pytest.raises(ChecksumError, match="model 'tiny4' refused"):
        reg.get("tiny4")
    with pytest.raises(ModelNotFoundError, match="models there: tiny, tiny4"):
        reg.get("nope")
    reg.close()
    assert reg.loaded() == {}


def test_refused_model_is_never_loaded(zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    monkeypatch.setattr(OnnxRuntimeBackend, "load", lambda self, m, p: loads.append(m.name))
    onnx = zoo / "tiny" / "model.onnx"
    onnx.write_bytes(b"not the model")
    with pytest.raises(ChecksumError):
        registry(zoo, tmp_path).get("tiny")
    assert loads == []


def test_explicit_tensorrt_without_it_is_refused(zoo: Path, tmp_path: Path) -> None:
    from dicomnode.engines import tensorrt_backend

    if tensorrt_backend.is_available():
        pytest.skip("TensorRT is usable here")
    reg = EngineRegistry(EnginesConfig(models_dir=zoo, backend="tensorrt"), tmp_path)
    with pytest.raises(BackendUnavailableError, match=r"engines\.backend is tensorrt but"):
        reg.get("tiny")


def test_graph_names_must_match_manifest(zoo: Path, tmp_path: Path) -> None:
    path = zoo / "tiny" / "manifest.yaml"
    path.write_text(path.read_text().replace("name: image", "name: pixels"))
    with pytest.raises(ManifestError, match=r"names \['pixels'\], but the ONNX graph has \['image'\]"):
        registry(zoo, tmp_path).get("tiny")
