"""The node's engines: pick the backend once, load each model once, hand out warm engines."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from dicomnode.config import EnginesConfig
from dicomnode.engines.backend import BackendChoice, choose_backend, create_backend
from dicomnode.engines.engine import DEFAULT_MAX_BATCH_BYTES, Engine
from dicomnode.engines.errors import EngineError
from dicomnode.engines.plan_cache import CACHE_DIRNAME
from dicomnode.engines.zoo import ZooEntry, find_model, scan_zoo

logger = logging.getLogger(__name__)


class EngineRegistry:
    """Engines by model name for the running node.

    `start()` logs the backend choice and, with `engines.load: startup`, loads and warms
    every valid model in the zoo; otherwise `get()` loads a model on first use. Engines
    stay loaded until `close()`.
    """

    def __init__(
        self,
        config: EnginesConfig,
        data_dir: Path,
        *,
        max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
        warmup: bool = True,
    ) -> None:
        self.config = config
        self.models_dir = config.models_dir
        self.cache_dir = data_dir / CACHE_DIRNAME
        self.max_batch_bytes = max_batch_bytes
        self.warmup = warmup
        self._choice: BackendChoice | None = None
        self._engines: dict[str, Engine] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def backend(self) -> BackendChoice:
        """The backend engines are built on, resolved (and logged) once."""
        with self._lock:
            if self._choice is None:
                self._choice = choose_backend(self.config.backend)
                logger.info("engine backend: %s (%s)", self._choice.name, self._choice.reason)
            return self._choice

    def start(self) -> list[Engine]:
        choice = self.backend
        if self.config.load == "startup":
            return self.load_all()
        logger.info("engines load on first use (backend %s)", choice.name)
        return []

    def models(self) -> list[ZooEntry]:
        return scan_zoo(self.models_dir)

    def get(self, name: str) -> Engine:
        """The loaded engine for `name`; raises ModelNotFoundError, ChecksumError, ManifestError."""
        with self._lock:
            engine = self._engines.get(name)
            if engine is not None:
                return engine
            loading = self._loading.setdefault(name, threading.Lock())
        # Per-model lock: a slow TensorRT build of one model does not hold up the others.
        with loading:
            with self._lock:
                engine = self._engines.get(name)
            if engine is None:
                engine = self._load(find_model(self.models_dir, name))
                with self._lock:
                    self._engines[name] = engine
        return engine

    def load_all(self, names: Iterable[str] | None = None) -> list[Engine]:
        """Load the named models (raising on the first refusal), or every valid model.

        Without names a refused model is logged by name and skipped, so one bad model
        does not stop the node; a rule that uses it fails with the refusal.
        """
        if names is not None:
            return [self.get(n) for n in names]
        engines = []
        for entry in self.models():
            if entry.error is not None:
                logger.error("model %r not loaded: %s", entry.name, entry.error)
                continue
            try:
                engines.append(self.get(entry.name))
            except EngineError as exc:
                logger.error("model %r not loaded: %s", entry.name, exc)
        return engines

    def loaded(self) -> dict[str, Engine]:
        with self._lock:
            return dict(self._engines)

    def close(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()

    def _load(self, entry: ZooEntry) -> Engine:
        manifest, _ = entry.require()
        choice = self.backend
        try:
            return self._make_engine(choice.name, entry)
        except EngineError as exc:
            if choice.name != "tensorrt" or self.config.backend != "auto":
                raise
            # auto promised "the best backend present"; ONNX Runtime still serves the model.
            logger.warning("model %r: TensorRT failed (%s); using onnxruntime", manifest.name, exc)
            return self._make_engine("onnxruntime", entry)

    def _make_engine(self, backend_name: str, entry: ZooEntry) -> Engine:
        manifest, onnx_path = entry.require()
        backend = create_backend(
            backend_name,
            cache_dir=self.cache_dir,
            precision=self.config.precision,
            intra_op_threads=self.config.intra_op_threads,
            max_batch=self.config.batch_size,
        )
        engine = Engine(
            manifest, onnx_path, backend,
            batch_size=self.config.batch_size, max_batch_bytes=self.max_batch_bytes,
        )
        try:
            engine.load(warmup=self.warmup)
        except BaseException:
            backend.close()
            raise
        return engine
