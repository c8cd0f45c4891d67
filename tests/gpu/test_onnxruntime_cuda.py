"""ONNX Runtime's CUDA execution provider against the torch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicomnode.engines import onnxruntime_backend
from dicomnode.engines.torch_reference import TorchRunner, load_torch_model
from dicomnode.engines.zoo import find_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        onnxruntime_backend.CUDA not in onnxruntime_backend.providers("auto"),
        reason="onnxruntime-gpu (CUDA execution provider) is not installed",
    ),
]


def test_onnxruntime_cuda_parity(gpu_zoo: Path) -> None:
    entry = find_model(gpu_zoo, "tiny")
    manifest, onnx = entry.require()
    backend = onnxruntime_backend.OnnxRuntimeBackend(device="cuda")
    backend.load(manifest, onnx)
    assert backend.providers[0] == onnxruntime_backend.CUDA
    slices = np.random.default_rng(1).random((3, 1, 32, 32), dtype=np.float32)
    out = backend.run({"image": slices})
    ref = TorchRunner(load_torch_model(manifest, entry.directory), manifest).run({"image": slices})
    np.testing.assert_allclose(out["output"], ref["output"], atol=1e-4, rtol=0)
