"""Throughput and latency of one model per backend and batch size, against torch eager.

Every figure in one report is measured in the same run on the same inputs, so the ratios
compare like with like.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicomnode.engines import onnxruntime_backend, tensorrt_backend
from dicomnode.engines.manifest import Manifest
from dicomnode.engines.torch_reference import TorchRunner, load_torch_model, torch_module
from dicomnode.engines.zoo import ZooEntry

logger = logging.getLogger(__name__)

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# The runner each result is compared against, per device.
BASELINES = {"cpu": "torch-eager-cpu", "cuda": "torch-eager-cuda-fp16"}


@dataclass(frozen=True)
class BenchResult:
    model: str
    runner: str
    device: str  # cpu | cuda
    batch_size: int
    latency_ms: float  # median per batch
    slices_per_s: float


@dataclass
class Runner:
    name: str
    device: str
    run: RunFn
    close: Callable[[], None]


def make_runners(
    entry: ZooEntry, *, cache_dir: Path, precision: str, intra_op_threads: int
) -> list[Runner]:
    """Every way this machine can run the model: backends, then torch eager where defined."""
    manifest, onnx_path = entry.require()
    runners: list[Runner] = []
    ort_cpu = onnxruntime_backend.OnnxRuntimeBackend(intra_op_threads=intra_op_threads, device="cpu")
    ort_cpu.load(manifest, onnx_path)
    runners.append(Runner("onnxruntime-cpu", "cpu", ort_cpu.run, ort_cpu.close))
    if onnxruntime_backend.CUDA in onnxruntime_backend.providers("auto"):
        ort_gpu = onnxruntime_backend.OnnxRuntimeBackend(device="cuda")
        ort_gpu.load(manifest, onnx_path)
        runners.append(Runner("onnxruntime-cuda", "cuda", ort_gpu.run, ort_gpu.close))
    if tensorrt_backend.is_available():
        trt = tensorrt_backend.TensorRTBackend(cache_dir=cache_dir, precision=precision)
        trt.load(manifest, onnx_path)
        label = trt.key.precision if trt.key is not None else precision
        runners.append(Runner(f"tensorrt-{label}", "cuda", trt.run, trt.close))
    model = load_torch_model(manifest, entry.directory)
    if model is not None:
        cpu = TorchRunner(model, manifest, "cpu")
        runners.append(Runner("torch-eager-cpu", "cpu", cpu.run, cpu.close))
        torch = torch_module()
        if torch.cuda.is_available():
            gpu_model = load_torch_model(manifest, entry.directory)
            gpu = TorchRunner(gpu_model, manifest, "cuda", fp16=True)
            runners.append(Runner("torch-eager-cuda-fp16", "cuda", gpu.run, gpu.close))
    else:
        why = "torch is not installed" if torch_module() is None else "the manifest names no torch_module"
        logger.info("model %r: no torch eager comparison (%s)", manifest.name, why)
    return runners


def bench_inputs(manifest: Manifest, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the manifest's optimal spatial shape, values in a typical normalised range."""
    rng = np.random.default_rng(seed)
    return {
        s.name: rng.random(manifest.opt_shape(s, batch_size)).astype(s.numpy_dtype)
        for s in manifest.inputs
    }


def batch_sizes_for(manifest: Manifest, wanted: list[int]) -> list[int]:
    limits = manifest.batch_range()
    sizes = sorted({b for b in wanted if limits.min <= b <= limits.max})
    return sizes or [limits.opt]


def measure(run: RunFn, batch: dict[str, np.ndarray], iterations: int, warmup: int = 2) -> list[float]:
    """Seconds per call over `iterations` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        run(batch)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - started)
    return times


def bench_model(
    entry: ZooEntry,
    batch_sizes: list[int],
    iterations: int,
    *,
    cache_dir: Path,
    precision: str = "fp16",
    intra_op_threads: int = 0,
) -> list[BenchResult]:
    manifest, _ = entry.require()
    runners = make_runners(
        entry, cache_dir=cache_dir, precision=precision, intra_op_threads=intra_op_threads
    )
    results = []
    try:
        for size in batch_sizes_for(manifest, batch_sizes):
            batch = bench_inputs(manifest, size)
            for runner in runners:
                times = measure(runner.run, batch, iterations)
                mean = statistics.fmean(times)
                results.append(BenchResult(
                    manifest.name, runner.name, runner.device, size,
                    statistics.median(times) * 1000.0, size / mean if mean > 0 else float("inf"),
                ))
    finally:
        for runner in runners:
            runner.close()
    return results


def speedup(results: list[BenchResult], result: BenchResult) -> float | None:
    """`result`'s throughput over its device's torch eager baseline at the same batch size."""
    baseline = BASELINES[result.device]
    for other in results:
        if (other.runner, other.batch_size, other.model) == (baseline, result.batch_size, result.model):
            return result.slices_per_s / other.slices_per_s
    return None


def format_results(results: list[BenchResult]) -> str:
    header = f"{'model':<20} {'runner':<22} {'batch':>5} {'ms/batch':>10} {'slices/s':>10} {'vs torch':>9}"
    lines = [header, "-" * len(header)]
    for r in results:
        ratio = speedup(results, r)
        shown = f"{ratio:.2f}x" if ratio is not None else "-"
        lines.append(
            f"{r.model:<20} {r.runner:<22} {r.batch_size:>5} {r.latency_ms:>10.2f} "
            f"{r.slices_per_s:>10.1f} {shown:>9}"
        )
    lines.append("vs torch: slices/s over torch eager on the same device (CPU FP32, CUDA FP16), same run")
    return "\n".join(lines)
