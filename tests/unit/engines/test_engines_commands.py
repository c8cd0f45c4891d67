"""`dicomnode engines list|build|bench` as the CLI calls them."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from dicomnode.config import Config, EnginesConfig, NodeConfig
from dicomnode.engines import tensorrt_backend
from dicomnode.engines.commands import cmd_bench, cmd_build, cmd_list
from dicomnode.engines.manifest import load_manifest
from dicomnode.engines.torch_reference import load_torch_model


def config_for(zoo: Path, tmp_path: Path) -> Config:
    return Config(
        node=NodeConfig(data_dir=tmp_path / "var"),
        engines=EnginesConfig(models_dir=zoo, backend="auto"),
    )


def test_list_shows_models_and_backends(
    zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert cmd_list(config_for(zoo, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "tiny " in out and "0.0.1" in out and " ok " in out
    assert "onnxruntime  available" in out
    assert "tensorrt" in out
    assert "engines.backend auto ->" in out


def test_list_fails_when_a_model_is_refused(
    zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    onnx = zoo / "tiny4" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[::-1])
    assert cmd_list(config_for(zoo, tmp_path)) == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out
    assert "refused: model 'tiny4' refused" in out


def test_list_of_empty_zoo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_list(config_for(tmp_path / "none", tmp_path)) == 0
    assert "(none" in capsys.readouterr().out


def test_build_without_tensorrt_says_so(
    zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    if tensorrt_backend.is_available():
        pytest.skip("TensorRT is usable here; tests/gpu covers build")
    assert cmd_build(config_for(zoo, tmp_path), None, "fp16") == 1
    err = capsys.readouterr().err
    assert "cannot build TensorRT engines" in err
    assert "ONNX Runtime needs no build step" in err


def test_bench_prints_ratio_against_torch(
    zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert cmd_bench(config_for(zoo, tmp_path), "tiny", [1, 4, 1000], 2) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("tiny ")]
    runners = {(r[1], int(r[2])) for r in rows}
    assert {("onnxruntime-cpu", 1), ("onnxruntime-cpu", 4), ("torch-eager-cpu", 4)} <= runners
    assert all(int(r[2]) != 1000 for r in rows)  # outside the model's batch range
    ratios = {r[1]: r[5] for r in rows if int(r[2]) == 4}
    assert ratios["torch-eager-cpu"] == "1.00x"
    assert ratios["onnxruntime-cpu"].endswith("x") and float(ratios["onnxruntime-cpu"][:-1]) > 0


def test_bench_unknown_model(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_bench(config_for(zoo, tmp_path), "missing", [1], 1) == 1
    assert "no model 'missing'" in capsys.readouterr().err
    assert cmd_bench(config_for(zoo, tmp_path), "tiny", [0], 1) == 2


def test_user_model_with_torch_definition_file(zoo: Path) -> None:
    # A user drops in a model with its torch definition as a file beside it.
    folder = zoo / "tiny"
    (folder / "net.py").write_text(textwrap.dedent("""
        from dicomnode.engines.tinymodel import TinyNet

        def build():
            return TinyNet()
    """))
    raw = yaml.safe_load((folder / "manifest.yaml").read_text())
    raw["torch_module"] = "net.py:build"
    (folder / "manifest.yaml").write_text(yaml.safe_dump(raw))
    manifest = load_manifest(folder)
    model = load_torch_model(manifest, folder)
    reference = load_torch_model(dataclasses.replace(manifest, torch_module=None), folder)
    assert reference is None
    import torch

    x = torch.from_numpy(np.ones((1, 1, 8, 8), np.float32))
    assert model(x)[0].shape == (1, 1, 8, 8)
