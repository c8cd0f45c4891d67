"""Manifest validation: every error names the model and the offending key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dicomnode.engines.errors import ChecksumError, ManifestError
from dicomnode.engines.manifest import (
    Preprocessing,
    load_manifest,
    parse_manifest,
    verify_model_file,
)


@pytest.fixture
def raw(zoo: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((zoo / "tiny" / "manifest.yaml").read_text())
    return data


def test_valid_manifest_parses(zoo: Path) -> None:
    m = load_manifest(zoo / "tiny")
    assert m.name == "tiny"
    assert [s.name for s in m.inputs] == ["image"]
    assert [s.name for s in m.outputs] == ["output", "score"]
    assert m.batch_range().max == 64
    assert m.opt_shape(m.inputs[0], 3) == (3, 1, 64, 64)
    assert m.training.seed == 0
    assert m.preprocessing.hu_window == (-40.0, 120.0)
    assert verify_model_file(m, zoo / "tiny") == zoo / "tiny" / "model.onnx"


def _break(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ("version", _DELETE, "version"),
        ("sha256", "abc", "sha256"),
        ("colour", "blue", "colour"),
        ("name", "Bad Name!", "name"),
        ("inputs", [], "inputs"),
        ("inputs.0.dtype", "float128", "inputs[0].dtype"),
        ("inputs.0.layout", "CHW", "inputs[0].layout"),
        ("inputs.0.shape", ["batch", 1, "height"], "inputs[0].shape"),
        ("inputs.0.shape", ["batch", 1, "depth", "width"], "inputs[0].shape[2]"),
        ("inputs.0.shape", ["batch", 0, "height", "width"], "inputs[0].shape[1]"),
        ("dynamic_dims.batch", {"min": 4, "opt": 2, "max": 8}, "dynamic_dims.batch"),
        ("dynamic_dims.batch", {"min": 1, "max": 8}, "dynamic_dims.batch"),
        ("preprocessing.hu_window", [100, -100], "preprocessing.hu_window"),
        ("preprocessing.hu_window", _DELETE, "preprocessing.normalize"),
        ("preprocessing.normalize", "loud", "preprocessing.normalize"),
        ("preprocessing.field_of_view_mm", [270, 220], "preprocessing.field_of_view_mm"),
        ("preprocessing.field_of_view_mm", 250, "preprocessing.field_of_view_mm"),
        ("preprocessing.fov", [220, 270], "preprocessing.fov"),
        ("training.seed", _DELETE, "training.seed"),
        ("training.seed", "zero", "training.seed"),
        ("training", "yesterday", "training"),
        ("torch_module", "not a spec", "torch_module"),
        ("outputs.1.name", "output", "outputs"),
    ],
)
def test_invalid_manifest_names_model_and_key(
    raw: dict[str, Any], path: str, value: Any, key: str
) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(_break(raw, path, value), "tiny")
    message = str(info.value)
    assert "'tiny'" in message
    assert f"manifest key {key}:" in message


def test_folder_name_must_match(zoo: Path) -> None:
    (zoo / "tiny").rename(zoo / "other")
    with pytest.raises(ManifestError, match="differs from its folder name"):
        load_manifest(zoo / "other")


def test_missing_and_unparsable_manifest(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"no manifest\.yaml"):
        load_manifest(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.yaml").write_text("name: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(tmp_path / "broken")


def test_checksum_mismatch_refuses_by_name(zoo: Path) -> None:
    m = load_manifest(zoo / "tiny")
    onnx = zoo / "tiny" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ChecksumError) as info:
        verify_model_file(m, zoo / "tiny")
    assert "model 'tiny' refused" in str(info.value)
    assert m.sha256 in str(info.value)
    onnx.unlink()
    with pytest.raises(ChecksumError, match="does not exist"):
        verify_model_file(m, zoo / "tiny")


def test_preprocessing_window_and_inverse() -> None:
    p = Preprocessing((-40.0, 120.0), "unit")
    hu = np.array([-1000.0, -40.0, 40.0, 120.0, 3000.0])
    x = p.apply(hu)
    np.testing.assert_allclose(x, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(p.invert(x), [-40.0, -40.0, 40.0, 120.0, 120.0])
    s = Preprocessing((-1000.0, 1000.0), "symmetric")
    np.testing.assert_allclose(s.apply(np.array([-1000.0, 0.0, 1000.0])), [-1.0, 0.0, 1.0])
    z = Preprocessing(None, "zscore", mean=10.0, std=2.0)
    np.testing.assert_allclose(z.invert(z.apply(np.array([4.0, 10.0]))), [4.0, 10.0])
    assert z.apply(np.array([1], dtype=np.int16)).dtype == np.float32
