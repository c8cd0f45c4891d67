"""Engine runtime: the model zoo, its backends (TensorRT, ONNX Runtime) and warm engines.

The node builds one `EngineRegistry` from its configuration; generators ask it for an
`Engine` by model name and call `Engine.run(slices)`.
"""

from dicomnode.engines.engine import Engine
from dicomnode.engines.errors import (
    BackendUnavailableError,
    ChecksumError,
    EngineError,
    EngineRunError,
    ManifestError,
    ModelNotFoundError,
)
from dicomnode.engines.manifest import Manifest, Preprocessing, TensorSpec
from dicomnode.engines.registry import EngineRegistry

__all__ = [
    "BackendUnavailableError",
    "ChecksumError",
    "Engine",
    "EngineError",
    "EngineRegistry",
    "EngineRunError",
    "Manifest",
    "ManifestError",
    "ModelNotFoundError",
    "Preprocessing",
    "TensorSpec",
]
