"""ONNX Runtime backend: CPU by default, the CUDA execution provider where installed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.engines.errors import BackendUnavailableError, EngineRunError, ManifestError
from dicomnode.engines.manifest import Manifest

logger = logging.getLogger(__name__)

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - onnxruntime is a runtime dependency
    ort = None

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def is_available() -> bool:
    return ort is not None


def availability() -> tuple[bool, str]:
    if ort is None:
        return False, "onnxruntime is not installed"
    providers = ort.get_available_providers()
    where = "CUDA and CPU" if CUDA in providers else "CPU"
    return True, f"onnxruntime {ort.__version__} on {where}"


def providers(device: str = "auto") -> list[str]:
    """Execution providers in preference order; `device` is auto, cpu or cuda."""
    if ort is None:
        raise BackendUnavailableError("onnxruntime is not installed")
    present = ort.get_available_providers()
    if device == "cuda" and CUDA not in present:
        raise BackendUnavailableError("the CUDA execution provider needs onnxruntime-gpu")
    if device in ("auto", "cuda") and CUDA in present:
        return [CUDA, CPU]
    return [CPU]


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, *, intra_op_threads: int = 0, device: str = "auto") -> None:
        self.intra_op_threads = intra_op_threads
        self.device = device
        self._session: Any = None
        self._output_names: list[str] = []

    def load(self, manifest: Manifest, onnx_path: Path) -> None:
        if ort is None:
            raise BackendUnavailableError("onnxruntime is not installed")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        chosen = providers(self.device)
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ManifestError(
                f"model {manifest.name!r}: ONNX Runtime cannot load {onnx_path}: {exc}"
            ) from exc
        _check_names(manifest, [i.name for i in session.get_inputs()], "inputs")
        _check_names(manifest, [o.name for o in session.get_outputs()], "outputs")
        self._session = session
        self._output_names = [o.name for o in manifest.outputs]
        logger.info(
            "model %r loaded on onnxruntime (%s)", manifest.name, ", ".join(session.get_providers())
        )

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise EngineRunError("onnxruntime backend used before load()")
        try:
            results = self._session.run(self._output_names, batch)
        except Exception as exc:  # e.g. a shape outside what the graph accepts
            raise EngineRunError(f"onnxruntime failed: {exc}") from exc
        return {name: np.asarray(r) for name, r in zip(self._output_names, results, strict=True)}

    def close(self) -> None:
        self._session = None


def _check_names(manifest: Manifest, actual: list[str], key: str) -> None:
    specs = manifest.inputs if key == "inputs" else manifest.outputs
    declared = [s.name for s in specs]
    if sorted(declared) != sorted(actual) and not (key == "outputs" and set(declared) <= set(actual)):
        raise ManifestError(
            f"model {manifest.name!r}: manifest key {key} names {declared}, "
            f"but the ONNX graph has {actual}"
        )
