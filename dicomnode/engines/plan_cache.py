"""On-disk cache of compiled TensorRT plans, keyed by everything that makes a plan valid.

A plan is only valid for the exact ONNX file, TensorRT version, GPU model and compute
capability, precision and optimisation profile it was built for; all of them go into the
key. Each plan has a JSON sidecar with its key and its own sha256 so a truncated or
tampered file is detected before TensorRT sees it. Nothing here needs TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "engine-cache"
T = TypeVar("T")

# One entry per input: (name, min shape, opt shape, max shape).
Profile = tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]


@dataclass(frozen=True)
class PlanKey:
    model: str
    model_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: Profile

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def filename(self) -> str:
        return f"{self.model}-{self.digest()[:24]}.plan"

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["profile"] = [[n, list(a), list(b), list(c)] for n, a, b, c in self.profile]
        return data


class PlanCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def plan_path(self, key: PlanKey) -> Path:
        return self.directory / key.filename()

    def meta_path(self, key: PlanKey) -> Path:
        return self.plan_path(key).with_suffix(".json")

    def timing_cache_path(self, trt_version: str, gpu_name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{gpu_name}-trt{trt_version}")
        return self.directory / f"timing-{safe}.cache"

    def read(self, key: PlanKey) -> bytes | None:
        """The cached plan for `key`, or None when absent or failing its integrity checks."""
        plan_path, meta_path = self.plan_path(key), self.meta_path(key)
        if not plan_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            plan = plan_path.read_bytes()
        except (OSError, ValueError) as exc:
            logger.warning("engine plan %s unreadable (%s); it will be rebuilt", plan_path, exc)
            return None
        if not isinstance(meta, dict) or meta.get("key") != key.as_json():
            logger.warning("engine plan %s was built for another configuration; rebuilding", plan_path)
            return None
        if meta.get("plan_sha256") != hashlib.sha256(plan).hexdigest():
            logger.warning("engine plan %s is corrupt (checksum mismatch); rebuilding", plan_path)
            return None
        return plan

    def write(self, key: PlanKey, plan: bytes) -> Path:
        """Store atomically: a crash mid-write leaves the previous state, never half a plan."""
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = {"key": key.as_json(), "plan_sha256": hashlib.sha256(plan).hexdigest()}
        _atomic_write(self.plan_path(key), plan)
        _atomic_write(self.meta_path(key), json.dumps(meta, indent=2).encode())
        return self.plan_path(key)

    def discard(self, key: PlanKey) -> None:
        for path in (self.plan_path(key), self.meta_path(key)):
            path.unlink(missing_ok=True)

    def read_timing_cache(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    def write_timing_cache(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)


def load_or_build(
    cache: PlanCache,
    key: PlanKey,
    build: Callable[[], bytes],
    deserialize: Callable[[bytes], T | None],
) -> tuple[T, bool]:
    """Deserialize the cached plan, or build, store and deserialize a new one.

    Returns the engine and whether it came from the cache. A cached plan that fails to
    deserialize (corrupt, or from an incompatible runtime) is discarded and rebuilt.
    """
    plan = cache.read(key)
    if plan is not None:
        try:
            engine = deserialize(plan)
        except Exception as exc:  # TensorRT raises plain RuntimeError/TypeError here
            logger.warning("cached plan for %r failed to load (%s); rebuilding", key.model, exc)
            engine = None
        if engine is not None:
            logger.info("model %r: reusing engine plan %s", key.model, cache.plan_path(key))
            return engine, True
        logger.warning("cached plan for %r is unusable; rebuilding", key.model)
        cache.discard(key)
    elif cache.plan_path(key).exists():
        cache.discard(key)
    plan = build()
    engine = deserialize(plan)
    if engine is None:
        raise RuntimeError(f"model {key.model!r}: a freshly built plan failed to deserialize")
    path = cache.write(key, plan)
    logger.info("model %r: engine plan built and cached at %s", key.model, path)
    return engine, False


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
