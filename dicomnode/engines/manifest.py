"""Model manifests: parse and validate `manifest.yaml`, verify the ONNX file's sha256.

A manifest is data, validated once; every error names the model and the offending key so
a user who drops in their own model learns exactly what to fix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from dicomnode.engines.errors import ChecksumError, ManifestError

MANIFEST_FILE = "manifest.yaml"
CARD_FILE = "card.md"
DEFAULT_MODEL_FILE = "model.onnx"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LAYOUT = re.compile(r"^N[CDHW]*$")
_TORCH_SPEC = re.compile(r"^[\w./-]+:[A-Za-z_]\w*$")
DTYPES: dict[str, type[np.generic]] = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "uint8": np.uint8,
    "bool": np.bool_,
}
_TOP_KEYS = {
    "name", "version", "task", "file", "sha256", "inputs", "outputs", "dynamic_dims",
    "preprocessing", "training", "torch_module", "torch_weights", "description",
}
_TENSOR_KEYS = {"name", "dtype", "layout", "shape"}
_TRAINING_KEYS = {"command", "seed", "data", "date"}

Dim = int | str  # an int is fixed; a str names a dynamic dimension


@dataclass(frozen=True)
class DimRange:
    """The range a dynamic dimension may take; `opt` is what engines are tuned for."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    layout: str
    shape: tuple[Dim, ...]

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return np.dtype(DTYPES[self.dtype])


@dataclass(frozen=True)
class Preprocessing:
    """Intensity mapping from Hounsfield units to model input values, and back."""

    hu_window: tuple[float, float] | None = None
    normalize: Literal["none", "unit", "symmetric", "zscore"] = "none"
    mean: float = 0.0
    std: float = 1.0
    # (narrowest, widest) reconstruction field of view (mm) the model was trained on: a wider
    # image is cropped around the head, a narrower one padded with air, so that the anatomy
    # reaches the model's grid at a scale it knows.
    field_of_view_mm: tuple[float, float] | None = None

    def apply(self, hu: np.ndarray) -> np.ndarray:
        x = np.asarray(hu, dtype=np.float32)
        if self.hu_window is not None:
            x = np.clip(x, self.hu_window[0], self.hu_window[1])
        if self.normalize == "unit":
            low, high = self._window()
            x = (x - low) / (high - low)
        elif self.normalize == "symmetric":
            low, high = self._window()
            x = 2.0 * (x - low) / (high - low) - 1.0
        elif self.normalize == "zscore":
            x = (x - self.mean) / self.std
        return x.astype(np.float32, copy=False)

    def invert(self, values: np.ndarray) -> np.ndarray:
        """Map model output values back to Hounsfield units (clipped values stay clipped)."""
        x = np.asarray(values, dtype=np.float32)
        if self.normalize == "unit":
            low, high = self._window()
            x = x * (high - low) + low
        elif self.normalize == "symmetric":
            low, high = self._window()
            x = (x + 1.0) / 2.0 * (high - low) + low
        elif self.normalize == "zscore":
            x = x * self.std + self.mean
        return x.astype(np.float32, copy=False)

    def _window(self) -> tuple[float, float]:
        assert self.hu_window is not None  # enforced by validation
        return self.hu_window


@dataclass(frozen=True)
class Training:
    command: str
    seed: int
    data: str
    date: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    task: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    training: Training
    dynamic_dims: dict[str, DimRange] = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    file: str = DEFAULT_MODEL_FILE
    torch_module: str | None = None
    torch_weights: str | None = None
    description: str = ""

    def dim_range(self, dim: Dim) -> DimRange:
        if isinstance(dim, int):
            return DimRange(dim, dim, dim)
        return self.dynamic_dims[dim]

    def batch_range(self) -> DimRange:
        """The range of the leading (batch) dimension, shared by every input."""
        return self.dim_range(self.inputs[0].shape[0])

    def opt_shape(self, spec: TensorSpec, batch: int | None = None) -> tuple[int, ...]:
        dims = [self.dim_range(d).opt for d in spec.shape]
        if batch is not None:
            dims[0] = batch
        return tuple(dims)


def load_manifest(model_dir: Path) -> Manifest:
    """Read and validate `model_dir/manifest.yaml`; the folder name must be the model name."""
    path = model_dir / MANIFEST_FILE
    label = model_dir.name
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"model {label!r}: no {MANIFEST_FILE} in {model_dir}") from exc
    except OSError as exc:
        raise ManifestError(f"model {label!r}: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"model {label!r}: {path} is not valid YAML: {exc}") from exc
    manifest = parse_manifest(raw, label)
    if manifest.name != model_dir.name:
        raise ManifestError(
            f"model {label!r}: manifest name {manifest.name!r} differs from its folder name; "
            "rename one so rules can refer to the model unambiguously"
        )
    return manifest


def parse_manifest(raw: Any, label: str = "?") -> Manifest:
    v = _Validator(label)
    if not isinstance(raw, dict):
        raise v.error("manifest", f"expected a mapping, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _TOP_KEYS)
    if unknown:
        raise v.error(unknown[0], f"unknown key (known keys: {', '.join(sorted(_TOP_KEYS))})")
    name = v.string(raw, "name")
    if not _NAME.match(name):
        raise v.error("name", f"{name!r} must be lower case letters, digits, '_', '.' or '-'")
    v.label = name
    sha = v.string(raw, "sha256").lower()
    if not _SHA256.match(sha):
        raise v.error("sha256", "must be 64 hexadecimal digits")
    dynamic = _parse_dynamic(v, raw.get("dynamic_dims", {}))
    inputs = _parse_tensors(v, raw, "inputs", dynamic, need_ranges=True)
    outputs = _parse_tensors(v, raw, "outputs", dynamic, need_ranges=False)
    batch_dims = {t.shape[0] for t in inputs}
    if len(batch_dims) != 1:
        raise v.error("inputs", "every input must share the same leading (batch) dimension")
    torch_module = v.optional_string(raw, "torch_module")
    if torch_module is not None and not _TORCH_SPEC.match(torch_module):
        raise v.error("torch_module", "expected 'package.module:Name' or 'file.py:Name'")
    return Manifest(
        name=name,
        version=str(v.required(raw, "version")),
        task=v.string(raw, "task"),
        sha256=sha,
        inputs=inputs,
        outputs=outputs,
        training=_parse_training(v, v.required(raw, "training")),
        dynamic_dims=dynamic,
        preprocessing=_parse_preprocessing(v, raw.get("preprocessing") or {}),
        file=v.optional_string(raw, "file") or DEFAULT_MODEL_FILE,
        torch_module=torch_module,
        torch_weights=v.optional_string(raw, "torch_weights"),
        description=v.optional_string(raw, "description") or "",
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_file(manifest: Manifest, model_dir: Path) -> Path:
    """Return the ONNX path once its sha256 matches the manifest; otherwise refuse the model."""
    path = model_dir / manifest.file
    if not path.is_file():
        raise ChecksumError(f"model {manifest.name!r} refused: {path} does not exist")
    actual = file_sha256(path)
    if actual != manifest.sha256:
        raise ChecksumError(
            f"model {manifest.name!r} refused: {path} has sha256 {actual}, its manifest "
            f"says {manifest.sha256}; the file was changed or corrupted. Restore the file, or "
            "update the manifest's sha256 once you have checked where the file came from"
        )
    return path


class _Validator:
    """Small helpers that raise ManifestError naming the model and the key."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, key: str, message: str) -> ManifestError:
        return ManifestError(f"model {self.label!r}: manifest key {key}: {message}")

    def required(self, raw: dict[str, Any], key: str, where: str = "") -> Any:
        if key not in raw or raw[key] is None:
            raise self.error(where + key, "required key is missing")
        return raw[key]

    def string(self, raw: dict[str, Any], key: str, where: str = "") -> str:
        value = self.required(raw, key, where)
        if not isinstance(value, str) or not value.strip():
            raise self.error(where + key, f"expected a non-empty string, got {value!r}")
        return value

    def optional_string(self, raw: dict[str, Any], key: str) -> str | None:
        if raw.get(key) is None:
            return None
        return self.string(raw, key)

    def integer(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected a whole number, got {value!r}")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {value!r}")
        return float(value)


def _parse_dynamic(v: _Validator, raw: Any) -> dict[str, DimRange]:
    if not isinstance(raw, dict):
        raise v.error("dynamic_dims", "expected a mapping of dimension name to {min, opt, max}")
    dims: dict[str, DimRange] = {}
    for name, spec in raw.items():
        key = f"dynamic_dims.{name}"
        if not isinstance(spec, dict) or set(spec) != {"min", "opt", "max"}:
            raise v.error(key, "expected exactly the keys min, opt and max")
        low, opt, high = (v.integer(spec[k], f"{key}.{k}") for k in ("min", "opt", "max"))
        if not 1 <= low <= opt <= high:
            raise v.error(key, f"need 1 <= min <= opt <= max, got {low}, {opt}, {high}")
        dims[str(name)] = DimRange(low, opt, high)
    return dims


def _parse_tensors(
    v: _Validator, raw: dict[str, Any], key: str, dynamic: dict[str, DimRange], need_ranges: bool
) -> tuple[TensorSpec, ...]:
    items = v.required(raw, key)
    if not isinstance(items, list) or not items:
        raise v.error(key, "expected a non-empty list of tensors")
    specs: list[TensorSpec] = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]."
        if not isinstance(item, dict):
            raise v.error(f"{key}[{i}]", "expected a mapping with name, dtype, layout, shape")
        unknown = sorted(str(k) for k in item if k not in _TENSOR_KEYS)
        if unknown:
            raise v.error(where + unknown[0], "unknown key (known keys: dtype, layout, name, shape)")
        name = v.string(item, "name", where)
        dtype = v.string(item, "dtype", where)
        if dtype not in DTYPES:
            raise v.error(where + "dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
        layout = v.string(item, "layout", where)
        if not _LAYOUT.match(layout):
            raise v.error(where + "layout", f"{layout!r}: expected N followed by C, D, H or W")
        shape = v.required(item, "shape", where)
        if not isinstance(shape, list) or len(shape) != len(layout):
            raise v.error(where + "shape", f"expected a list of {len(layout)} dims for {layout}")
        dims: list[Dim] = []
        for j, dim in enumerate(shape):
            if isinstance(dim, str):
                if need_ranges and dim not in dynamic:
                    raise v.error(f"{where}shape[{j}]", f"dynamic dim {dim!r} has no dynamic_dims range")
                dims.append(dim)
            else:
                size = v.integer(dim, f"{where}shape[{j}]")
                if size < 1:
                    raise v.error(f"{where}shape[{j}]", "a fixed dimension must be at least 1")
                dims.append(size)
        specs.append(TensorSpec(name, dtype, layout, tuple(dims)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise v.error(key, f"tensor names must be unique, got {names}")
    return tuple(specs)


def _parse_preprocessing(v: _Validator, raw: Any) -> Preprocessing:
    if not isinstance(raw, dict):
        raise v.error("preprocessing", "expected a mapping")
    known = ("hu_window", "normalize", "field_of_view_mm")
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise v.error(f"preprocessing.{unknown[0]}", f"unknown key (known keys: {', '.join(known)})")
    fov = _pair(v, raw, "field_of_view_mm", "[narrowest, widest] in mm", lambda low, high: 0 < low <= high,
                "expected 0 < narrowest <= widest")
    window = _pair(v, raw, "hu_window", "[low, high] in HU", lambda low, high: low < high,
                   "low must be below high")
    norm = raw.get("normalize", "none")
    if isinstance(norm, dict):
        if set(norm) != {"mean", "std"}:
            raise v.error("preprocessing.normalize", "a mapping must have exactly mean and std")
        mean = v.number(norm["mean"], "preprocessing.normalize.mean")
        std = v.number(norm["std"], "preprocessing.normalize.std")
        if std <= 0:
            raise v.error("preprocessing.normalize.std", "must be greater than 0")
        return Preprocessing(window, "zscore", mean, std, fov)
    if norm not in ("none", "unit", "symmetric"):
        raise v.error("preprocessing.normalize", f"{norm!r}: expected none, unit, symmetric or {{mean, std}}")
    if norm != "none" and window is None:
        raise v.error("preprocessing.normalize", f"{norm!r} needs preprocessing.hu_window")
    return Preprocessing(window, norm, field_of_view_mm=fov)


def _pair(v: _Validator, raw: dict[str, Any], key: str, expected: str,
          valid: Callable[[float, float], bool], invalid: str) -> tuple[float, float] | None:
    """preprocessing.KEY as two numbers, or None where it is absent."""
    if raw.get(key) is None:
        return None
    name = f"preprocessing.{key}"
    values = raw[key]
    if not isinstance(values, list) or len(values) != 2:
        raise v.error(name, f"expected {expected}")
    low, high = (v.number(x, name) for x in values)
    if not valid(low, high):
        raise v.error(name, f"{invalid}, got {low}, {high}")
    return low, high


def _parse_training(v: _Validator, raw: Any) -> Training:
    if not isinstance(raw, dict):
        raise v.error("training", "expected a mapping with command, seed, data, date")
    unknown = sorted(str(k) for k in raw if k not in _TRAINING_KEYS)
    if unknown:
        raise v.error(f"training.{unknown[0]}", "unknown key (known keys: command, data, date, seed)")
    return Training(
        command=v.string(raw, "command", "training."),
        seed=v.integer(v.required(raw, "seed", "training."), "training.seed"),
        data=v.string(raw, "data", "training."),
        # YAML turns an unquoted 2025-01-31 into a date; keep its ISO text.
        date=str(v.required(raw, "date", "training.")),
    )
