"""The torch definition a manifest may name, for parity checks and benchmarks only.

torch is a training/test extra, never a runtime dependency: every entry point here answers
None (or raises a clear error) when torch is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.engines.errors import EngineError
from dicomnode.engines.manifest import Manifest

logger = logging.getLogger(__name__)


def torch_module() -> Any:
    """The torch module, or None when it is not installed."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def load_torch_model(manifest: Manifest, model_dir: Path) -> Any:
    """Instantiate the manifest's `torch_module` in eval mode with its weights, or None.

    `torch_module` is `package.module:Factory` or `file.py:Factory` (relative to the model
    folder); the factory is called without arguments. `torch_weights` (relative to the
    model folder) is a state dict loaded into the result.
    """
    torch = torch_module()
    if manifest.torch_module is None or torch is None:
        return None
    module_name, attr = manifest.torch_module.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            module = _import_file(model_dir / module_name, f"dicomnode_model_{manifest.name}")
        else:
            module = importlib.import_module(module_name)
        factory = getattr(module, attr)
        model = factory()
    except Exception as exc:  # any failure of user code is reported the same way
        raise EngineError(
            f"model {manifest.name!r}: cannot build torch_module {manifest.torch_module!r}: {exc}"
        ) from exc
    if manifest.torch_weights is not None:
        weights = model_dir / manifest.torch_weights
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:
            raise EngineError(f"model {manifest.name!r}: cannot load {weights}: {exc}") from exc
    return model.eval()


class TorchRunner:
    """Runs a torch model on host arrays (CPU FP32, or CUDA with optional FP16 autocast)."""

    def __init__(self, model: Any, manifest: Manifest, device: str = "cpu", fp16: bool = False):
        self.torch = torch_module()
        self.model = model.to(device)
        self.manifest = manifest
        self.device = device
        self.fp16 = fp16

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        args = [torch.from_numpy(np.ascontiguousarray(batch[s.name])).to(self.device)
                for s in self.manifest.inputs]
        with torch.inference_mode(), torch.autocast(
            device_type=self.device.split(":")[0], dtype=torch.float16, enabled=self.fp16
        ):
            result = self.model(*args)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        if not isinstance(result, tuple | list):
            result = (result,)
        names = [s.name for s in self.manifest.outputs]
        return {n: r.float().cpu().numpy() for n, r in zip(names, result, strict=False)}

    def close(self) -> None:
        self.model = None


def _import_file(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
