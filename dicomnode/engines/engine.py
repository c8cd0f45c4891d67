"""A loaded model: checks inputs against the manifest, batches slices, one job at a time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dicomnode.engines.backend import Backend
from dicomnode.engines.batching import bounded_batch_size, run_batched
from dicomnode.engines.errors import EngineRunError
from dicomnode.engines.manifest import Manifest, TensorSpec

logger = logging.getLogger(__name__)

# Host memory one batch of inputs plus outputs may take; bounds the batch for large slices.
DEFAULT_MAX_BATCH_BYTES = 512 << 20


class Engine:
    """One model on one backend, loaded once and kept warm.

    `run` is thread-safe: calls are serialised per engine (one GPU job at a time, the
    others wait their turn), so concurrent series never hold two batches on the device.
    """

    def __init__(
        self,
        manifest: Manifest,
        onnx_path: Path,
        backend: Backend,
        *,
        batch_size: int = 8,
        max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        self.manifest = manifest
        self.onnx_path = onnx_path
        self.backend = backend
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self._lock = threading.Lock()
        self._loaded = False
        self._waiting = 0
        self._count_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def waiting(self) -> int:
        """Calls queued behind the one running (for metrics and logs)."""
        return self._waiting

    def load(self, warmup: bool = True) -> None:
        with self._lock:
            if self._loaded:
                return
            started = time.perf_counter()
            self.backend.load(self.manifest, self.onnx_path)
            self._loaded = True
            if warmup:
                self._warmup()
            logger.info(
                "engine %s %s ready on %s in %.2f s (batch size %d)", self.name,
                self.manifest.version, self.backend_name, time.perf_counter() - started,
                self.batch_size,
            )

    def _warmup(self) -> None:
        # The first run allocates workspaces and picks kernels; pay for it before a series does.
        size = bounded_batch_size(self.batch_size, self.manifest.batch_range().max, 0, None)
        size = max(size, self.manifest.batch_range().min)
        batch = {
            s.name: np.zeros(self.manifest.opt_shape(s, size), dtype=s.numpy_dtype)
            for s in self.manifest.inputs
        }
        self.backend.run(batch)

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run any number of slices (first axis) and return every output, batch first.

        A single-input model takes an array; a model with several inputs a mapping of input
        name to array. A model whose layout starts NC with one channel also takes slices
        without the channel axis.
        """
        feeds = self._prepare(inputs)
        with self._count_lock:
            self._waiting += 1
        with self._lock:
            with self._count_lock:
                self._waiting -= 1
            if not self._loaded:
                raise EngineRunError(f"engine {self.name!r} is not loaded (or was closed)")
            return self._run_locked(feeds)

    def _run_locked(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        limits = self.manifest.batch_range()
        per_slice = sum(a[:1].nbytes for a in feeds.values()) * (1 + len(self.manifest.outputs))
        size = bounded_batch_size(self.batch_size, limits.max, per_slice, self.max_batch_bytes)
        if size < limits.min:
            size = limits.min
        try:
            return run_batched(self.backend.run, feeds, size, min_batch=limits.min)
        except EngineRunError as exc:
            raise EngineRunError(f"engine {self.name!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._loaded:
                self.backend.close()
                self._loaded = False

    def _prepare(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = self.manifest.inputs
        if isinstance(inputs, np.ndarray):
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise EngineRunError(f"engine {self.name!r} has several inputs ({names}); pass a mapping")
            given: Mapping[str, np.ndarray] = {specs[0].name: inputs}
        else:
            given = inputs
        missing = [s.name for s in specs if s.name not in given]
        extra = [n for n in given if n not in {s.name for s in specs}]
        if missing or extra:
            raise EngineRunError(f"engine {self.name!r}: missing inputs {missing}, unknown inputs {extra}")
        return {s.name: self._conform(s, np.asarray(given[s.name])) for s in specs}

    def _conform(self, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
        rank = len(spec.shape)
        if array.ndim == rank - 1 and spec.layout.startswith("NC") and spec.shape[1] == 1:
            array = array[:, np.newaxis]
        if array.ndim != rank:
            raise EngineRunError(
                f"engine {self.name!r}: input {spec.name!r} needs {rank} dims ({spec.layout}), "
                f"got shape {array.shape}"
            )
        for axis, (dim, size) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if axis == 0:
                continue  # any number of slices; batching fits them to the model
            r = self.manifest.dim_range(dim)
            if not r.min <= size <= r.max:
                raise EngineRunError(
                    f"engine {self.name!r}: input {spec.name!r} axis {spec.layout[axis]} is "
                    f"{size}, the model takes {r.min}..{r.max}"
                )
        return np.ascontiguousarray(array, dtype=spec.numpy_dtype)
