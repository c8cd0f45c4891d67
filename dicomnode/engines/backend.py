"""The one interface every backend implements, and the choice of backend.

Backends guard their imports and answer `is_available()` the pydicom way; this module asks
them and never assumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from dicomnode.engines import onnxruntime_backend, tensorrt_backend
from dicomnode.engines.errors import BackendUnavailableError
from dicomnode.engines.manifest import Manifest

logger = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime")


class Backend(Protocol):
    """A loaded model on one runtime. `run` takes and returns batch-first host arrays."""

    name: str

    def load(self, manifest: Manifest, onnx_path: Path) -> None: ...

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reason: str


def availability() -> dict[str, tuple[bool, str]]:
    """For every backend: whether it can run here, and why (or why not)."""
    return {
        "tensorrt": tensorrt_backend.availability(),
        "onnxruntime": onnxruntime_backend.availability(),
    }


def choose_backend(preference: str) -> BackendChoice:
    """Resolve `auto` to the fastest backend present; refuse an explicit one that is absent."""
    found = availability()
    if preference == "auto":
        trt_ok, trt_why = found["tensorrt"]
        if trt_ok:
            return BackendChoice("tensorrt", f"auto: {trt_why}")
        ort_ok, ort_why = found["onnxruntime"]
        if not ort_ok:
            raise BackendUnavailableError(f"no engine backend can run here: {trt_why}; {ort_why}")
        return BackendChoice("onnxruntime", f"auto: TensorRT not usable ({trt_why}); {ort_why}")
    if preference not in found:
        raise BackendUnavailableError(
            f"unknown engine backend {preference!r} (known: auto, {', '.join(BACKENDS)})"
        )
    ok, why = found[preference]
    if not ok:
        raise BackendUnavailableError(f"engines.backend is {preference} but {why}")
    return BackendChoice(preference, f"configured: {why}")


def create_backend(
    name: str, *, cache_dir: Path, precision: str, intra_op_threads: int, max_batch: int | None
) -> Backend:
    if name == "tensorrt":
        return tensorrt_backend.TensorRTBackend(
            cache_dir=cache_dir, precision=precision, max_batch=max_batch
        )
    if name == "onnxruntime":
        return onnxruntime_backend.OnnxRuntimeBackend(intra_op_threads=intra_op_threads)
    raise BackendUnavailableError(f"unknown engine backend {name!r}")
