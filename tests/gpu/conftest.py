"""Fixtures for GPU tests: the tiny test model in a temporary zoo; skipped without torch."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="GPU tests use torch for the reference and device buffers")
pytest.importorskip("onnx", reason="torch.onnx.export needs onnx (test extra)")

from dicomnode.engines.tinymodel import write_tiny_model


@pytest.fixture(scope="module")
def gpu_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpu-zoo")
    write_tiny_model(root, name="tiny")
    return root
