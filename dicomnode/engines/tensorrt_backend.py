"""TensorRT backend: compile the ONNX file to a plan once per GPU, cache it, run it on a stream.

Device buffers and the CUDA stream come from torch, so this backend needs `tensorrt` and a
CUDA build of `torch`. Both imports are guarded: without them the package still imports
and `availability()` says what is missing.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.engines.errors import BackendUnavailableError, EngineError, EngineRunError
from dicomnode.engines.manifest import Manifest
from dicomnode.engines.plan_cache import PlanCache, PlanKey, Profile, load_or_build

logger = logging.getLogger(__name__)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


trt: Any = _optional("tensorrt")
torch: Any = _optional("torch")  # device buffers and the CUDA stream

WORKSPACE_BYTES = 2 << 30


def is_available() -> bool:
    return availability()[0]


def availability() -> tuple[bool, str]:
    if trt is None:
        return False, "tensorrt is not installed (pip install 'dicomnode[tensorrt]')"
    if torch is None:
        return False, "the TensorRT backend needs torch with CUDA for device buffers"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)}"


def fp16_supported(capability: tuple[int, int]) -> bool:
    """Whether the GPU has fast FP16 (tensor cores from Volta on; P100 and Jetson TX2 too)."""
    return capability[0] >= 7 or capability in ((6, 0), (6, 2), (5, 3))


def effective_precision(requested: str, capability: tuple[int, int]) -> str:
    if requested == "fp16" and not fp16_supported(capability):
        logger.warning("GPU compute capability %d.%d has no fast FP16; building FP32", *capability)
        return "fp32"
    return requested


def optimisation_profile(manifest: Manifest, opt_batch: int | None = None) -> Profile:
    """(name, min, opt, max) shapes per input from the manifest's fixed and dynamic dims.

    `opt_batch` (the configured batch size) tunes the batch dimension, clamped to its range.
    """
    entries = []
    for spec in manifest.inputs:
        ranges = [manifest.dim_range(d) for d in spec.shape]
        low = tuple(r.min for r in ranges)
        opt = [r.opt for r in ranges]
        high = tuple(r.max for r in ranges)
        if opt_batch is not None:
            opt[0] = min(max(opt_batch, low[0]), high[0])
        entries.append((spec.name, low, tuple(opt), high))
    return tuple(entries)


def plan_key(
    manifest: Manifest,
    *,
    trt_version: str,
    gpu_name: str,
    capability: tuple[int, int],
    precision: str,
    opt_batch: int | None,
) -> PlanKey:
    return PlanKey(
        model=manifest.name,
        model_sha256=manifest.sha256,
        trt_version=trt_version,
        gpu_name=gpu_name,
        compute_capability=f"{capability[0]}.{capability[1]}",
        precision=effective_precision(precision, capability),
        profile=optimisation_profile(manifest, opt_batch),
    )


class TensorRTBackend:
    name = "tensorrt"

    def __init__(
        self,
        *,
        cache_dir: Path,
        precision: str = "fp16",
        max_batch: int | None = None,
        device_index: int = 0,
        progress: bool = False,
    ) -> None:
        self.cache = PlanCache(cache_dir)
        self.precision = precision
        self.opt_batch = max_batch
        self.device_index = device_index
        self.progress = progress
        self.cache_hit = False
        self.key: PlanKey | None = None
        self._runtime: Any = None  # must outlive the engine it deserialized
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    def make_key(self, manifest: Manifest) -> PlanKey:
        ok, why = availability()
        if not ok:
            raise BackendUnavailableError(why)
        device = torch.device("cuda", self.device_index)
        return plan_key(
            manifest,
            trt_version=str(trt.__version__),
            gpu_name=torch.cuda.get_device_name(device),
            capability=_capability(device),
            precision=self.precision,
            opt_batch=self.opt_batch,
        )

    def load(self, manifest: Manifest, onnx_path: Path) -> None:
        key = self.make_key(manifest)
        runtime = trt.Runtime(_trt_logger())
        timing = self.cache.timing_cache_path(key.trt_version, key.gpu_name)

        def build() -> bytes:
            return build_plan(onnx_path, key, self.cache, timing, progress=self.progress)

        def deserialize(plan: bytes) -> Any:
            return runtime.deserialize_cuda_engine(plan)

        with torch.cuda.device(self.device_index):
            try:
                engine, self.cache_hit = load_or_build(self.cache, key, build, deserialize)
            except RuntimeError as exc:
                raise EngineError(f"model {manifest.name!r}: TensorRT build failed: {exc}") from exc
            self._context = engine.create_execution_context()
            self._stream = torch.cuda.Stream(device=self.device_index)
        self._engine, self._runtime, self.key = engine, runtime, key
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        logger.info(
            "model %r loaded on TensorRT %s (%s, %s, plan %s)", manifest.name, key.trt_version,
            key.gpu_name, key.precision, "from cache" if self.cache_hit else "built",
        )

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._context is None:
            raise EngineRunError("tensorrt backend used before load()")
        device = torch.device("cuda", self.device_index)
        keep: list[Any] = []  # device tensors must outlive the asynchronous launch
        with torch.cuda.device(device), torch.cuda.stream(self._stream):
            for name in self._inputs:
                dtype = _torch_dtype(self._engine.get_tensor_dtype(name))
                host = torch.from_numpy(np.ascontiguousarray(batch[name]))
                tensor = host.to(device=device, dtype=dtype, non_blocking=True).contiguous()
                if not self._context.set_input_shape(name, tuple(tensor.shape)):
                    raise EngineRunError(
                        f"input {name!r} shape {tuple(tensor.shape)} is outside the engine's profile"
                    )
                self._context.set_tensor_address(name, tensor.data_ptr())
                keep.append(tensor)
            outputs: dict[str, Any] = {}
            for name in self._outputs:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = _torch_dtype(self._engine.get_tensor_dtype(name))
                outputs[name] = torch.empty(shape, dtype=dtype, device=device)
                self._context.set_tensor_address(name, outputs[name].data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EngineRunError("TensorRT execute_async_v3 failed")
            host_out = {n: t.to("cpu", non_blocking=False) for n, t in outputs.items()}
        self._stream.synchronize()
        del keep
        return {n: t.numpy() for n, t in host_out.items()}

    def close(self) -> None:
        # Context before engine: TensorRT requires that destruction order.
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None


def build_plan(
    onnx_path: Path, key: PlanKey, cache: PlanCache, timing_path: Path, *, progress: bool = False
) -> bytes:
    """Compile `onnx_path` with the profile and precision of `key`; update the timing cache."""
    if trt is None:
        raise BackendUnavailableError("tensorrt is not installed")
    log = _trt_logger()
    builder = trt.Builder(log)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if key.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    timing_cache = config.create_timing_cache(cache.read_timing_cache(timing_path))
    config.set_timing_cache(timing_cache, ignore_mismatch=True)
    profile = builder.create_optimization_profile()
    for name, low, opt, high in key.profile:
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if progress:
        config.progress_monitor = _tqdm_monitor(key.model)
    logger.info("model %r: building TensorRT %s plan (this takes a while)", key.model, key.precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT build_serialized_network returned nothing; see the log above")
    cache.write_timing_cache(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


_LOGGER: Any = None


def _capability(device: Any) -> tuple[int, int]:
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def _trt_logger() -> Any:
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _torch_dtype(dtype: Any) -> Any:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.INT8: torch.int8,
        trt.DataType.UINT8: torch.uint8,
        trt.DataType.BOOL: torch.bool,
    }
    if dtype not in table:
        raise EngineRunError(f"TensorRT tensor type {dtype} is not supported")
    return table[dtype]


def _tqdm_monitor(model: str) -> Any:
    """A TensorRT progress monitor drawing one tqdm bar per top-level build phase."""
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"{model}: {phase_name}", leave=False)

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name in self.bars:
                self.bars[phase_name].update(1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Monitor()
