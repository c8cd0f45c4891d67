"""TensorRT backend on a real GPU: plan build, cache reuse, FP16 parity, corrupt cache rebuild."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from dicomnode.engines import tensorrt_backend
from dicomnode.engines.torch_reference import TorchRunner, load_torch_model
from dicomnode.engines.zoo import find_model

_TRT_OK, _TRT_WHY = tensorrt_backend.availability()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.tensorrt,
    pytest.mark.skipif(not _TRT_OK, reason=f"TensorRT backend unavailable: {_TRT_WHY}"),
]

# FP16 engine vs FP32 torch on values in [0, 1]: half precision keeps ~3 decimal digits.
FP16_ATOL = 1e-2
FP32_ATOL = 1e-4


def _backend(cache: Path, precision: str) -> tensorrt_backend.TensorRTBackend:
    return tensorrt_backend.TensorRTBackend(cache_dir=cache, precision=precision, max_batch=8)


def _reference(zoo: Path, slices: np.ndarray) -> dict[str, np.ndarray]:
    entry = find_model(zoo, "tiny")
    manifest, _ = entry.require()
    return TorchRunner(load_torch_model(manifest, entry.directory), manifest).run({"image": slices})


def test_build_then_cache_hit_is_faster(gpu_zoo: Path, tmp_path: Path) -> None:
    manifest, onnx = find_model(gpu_zoo, "tiny").require()
    first = _backend(tmp_path, "fp16")
    started = time.perf_counter()
    first.load(manifest, onnx)
    build_s = time.perf_counter() - started
    assert not first.cache_hit
    assert first.key is not None and first.cache.plan_path(first.key).is_file()
    first.close()
    second = _backend(tmp_path, "fp16")
    started = time.perf_counter()
    second.load(manifest, onnx)
    load_s = time.perf_counter() - started
    assert second.cache_hit
    assert load_s < build_s, f"cached load {load_s:.2f}s not faster than build {build_s:.2f}s"
    second.close()


@pytest.mark.parametrize(("precision", "atol"), [("fp16", FP16_ATOL), ("fp32", FP32_ATOL)])
def test_parity_with_torch(gpu_zoo: Path, tmp_path: Path, precision: str, atol: float) -> None:
    manifest, onnx = find_model(gpu_zoo, "tiny").require()
    backend = _backend(tmp_path, precision)
    backend.load(manifest, onnx)
    slices = np.random.default_rng(0).random((5, 1, 64, 48), dtype=np.float32)
    out = backend.run({"image": slices})
    ref = _reference(gpu_zoo, slices)
    for name in ("output", "score"):
        np.testing.assert_allclose(out[name], ref[name], atol=atol, rtol=0)
    backend.close()


def test_corrupt_cache_file_is_rebuilt(gpu_zoo: Path, tmp_path: Path) -> None:
    manifest, onnx = find_model(gpu_zoo, "tiny").require()
    backend = _backend(tmp_path, "fp16")
    backend.load(manifest, onnx)
    assert backend.key is not None
    plan = backend.cache.plan_path(backend.key)
    backend.close()
    data = bytearray(plan.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    plan.write_bytes(bytes(data))
    again = _backend(tmp_path, "fp16")
    again.load(manifest, onnx)
    assert not again.cache_hit
    out = again.run({"image": np.zeros((2, 1, 32, 32), np.float32)})
    assert out["output"].shape == (2, 1, 32, 32)
    again.close()

