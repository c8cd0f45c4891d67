"""`dicomnode engines list|build|bench`: each returns the exit code and prints its report."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from dicomnode.config import Config
from dicomnode.engines import tensorrt_backend
from dicomnode.engines.backend import availability, choose_backend
from dicomnode.engines.bench import bench_model, format_results
from dicomnode.engines.errors import EngineError
from dicomnode.engines.plan_cache import CACHE_DIRNAME
from dicomnode.engines.zoo import ZooEntry, find_model, scan_zoo

logger = logging.getLogger(__name__)


def cmd_list(config: Config) -> int:
    """Models with version and checksum status, then the backends; 1 when any model is refused."""
    models_dir = config.engines.models_dir
    entries = scan_zoo(models_dir)
    print(f"models in {models_dir}:")
    if not entries:
        print("  (none: see engines/README.md to add one)")
    for e in entries:
        version = e.manifest.version if e.manifest else "?"
        task = e.manifest.task if e.manifest else ""
        status = "ok" if e.ok else "REFUSED"
        card = "" if e.has_card else "  (no card.md)"
        print(f"  {e.name:<24} {version:<10} {status:<8} {task}{card}")
    refused = [e for e in entries if not e.ok]
    for e in refused:
        print(f"refused: {e.error}")
    print("backends:")
    for name, (ok, why) in availability().items():
        print(f"  {name:<12} {'available' if ok else 'unavailable':<12} {why}")
    try:
        choice = choose_backend(config.engines.backend)
        print(f"engines.backend {config.engines.backend} -> {choice.name}")
    except EngineError as exc:
        print(f"engines.backend {config.engines.backend}: {exc}")
        return 1
    return 1 if refused else 0


def cmd_build(config: Config, model: str | None, precision: str) -> int:
    """Compile TensorRT plans ahead of time into <data_dir>/engine-cache/."""
    ok, why = tensorrt_backend.availability()
    if not ok:
        print(
            f"cannot build TensorRT engines: {why}. ONNX Runtime needs no build step; "
            "install the [tensorrt] extra on a machine with an NVIDIA GPU to compile plans.",
            file=sys.stderr,
        )
        return 1
    entries = _select(config, model)
    if entries is None:
        return 1
    cache_dir = config.node.data_dir / CACHE_DIRNAME
    failed = 0
    for entry in tqdm(entries, desc="engines", unit="model", disable=len(entries) < 2):
        if entry.error is not None:
            print(f"skipped: {entry.error}", file=sys.stderr)
            failed += 1
            continue
        manifest, onnx_path = entry.require()
        backend = tensorrt_backend.TensorRTBackend(
            cache_dir=cache_dir, precision=precision, max_batch=config.engines.batch_size,
            progress=True,
        )
        started = time.perf_counter()
        try:
            backend.load(manifest, onnx_path)
        except EngineError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            failed += 1
            continue
        finally:
            backend.close()
        key = backend.key
        assert key is not None
        state = "cached already" if backend.cache_hit else "built"
        print(
            f"{manifest.name} {manifest.version}: {state} ({key.precision}, {key.gpu_name}, "
            f"TensorRT {key.trt_version}) in {time.perf_counter() - started:.1f} s "
            f"-> {backend.cache.plan_path(key)}"
        )
    return 1 if failed else 0


def cmd_bench(config: Config, model: str | None, batch_sizes: list[int], iterations: int) -> int:
    """Slices/s and latency per batch size on every backend present, against torch eager."""
    if iterations < 1 or not batch_sizes or min(batch_sizes) < 1:
        print("bench needs iterations >= 1 and batch sizes >= 1", file=sys.stderr)
        return 2
    entries = _select(config, model)
    if entries is None:
        return 1
    status = 0
    results = []
    for entry in entries:
        if entry.error is not None:
            print(f"skipped: {entry.error}", file=sys.stderr)
            status = 1
            continue
        try:
            results += bench_model(
                entry, batch_sizes, iterations,
                cache_dir=config.node.data_dir / CACHE_DIRNAME,
                precision=config.engines.precision,
                intra_op_threads=config.engines.intra_op_threads,
            )
        except EngineError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            status = 1
    if results:
        print(format_results(results))
    return status


def _select(config: Config, model: str | None) -> list[ZooEntry] | None:
    """The one named model, or the whole zoo; None (after saying why) when there is nothing."""
    models_dir = config.engines.models_dir
    if model is not None:
        try:
            return [find_model(models_dir, model)]
        except EngineError as exc:
            print(str(exc), file=sys.stderr)
            return None
    entries = scan_zoo(models_dir)
    if not entries:
        print(f"no models in {models_dir}", file=sys.stderr)
        return None
    return entries
