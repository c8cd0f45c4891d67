"""Fixtures for the engine tests: a tiny torch model exported to ONNX into a temporary zoo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the engine tests export their model with torch (test extra)")
pytest.importorskip("onnx", reason="torch.onnx.export needs onnx (test extra)")

from dicomnode.engines.tinymodel import write_tiny_model


@pytest.fixture(scope="session")
def built_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported once per session; tests get their own copy through `zoo`."""
    root = tmp_path_factory.mktemp("zoo")
    write_tiny_model(root, name="tiny")
    write_tiny_model(root, name="tiny4", fixed_batch=4, seed=1)
    return root


@pytest.fixture
def zoo(built_zoo: Path, tmp_path: Path) -> Path:
    target = tmp_path / "engines"
    shutil.copytree(built_zoo, target)
    return target
