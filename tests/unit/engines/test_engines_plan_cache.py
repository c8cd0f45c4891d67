"""TensorRT plan cache logic, without TensorRT: keys, integrity checks, rebuild on corruption."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dicomnode.engines.manifest import load_manifest
from dicomnode.engines.plan_cache import PlanCache, PlanKey, load_or_build
from dicomnode.engines.tensorrt_backend import effective_precision, optimisation_profile, plan_key

KEY = PlanKey(
    model="tiny",
    model_sha256="a" * 64,
    trt_version="10.3.0",
    gpu_name="NVIDIA H100",
    compute_capability="9.0",
    precision="fp16",
    profile=(("image", (1, 1, 8, 8), (8, 1, 64, 64), (64, 1, 512, 512)),),
)


class Builds:
    """A stand-in for TensorRT: a plan is valid when it starts with b'PLAN'."""

    def __init__(self) -> None:
        self.count = 0

    def build(self) -> bytes:
        self.count += 1
        return b"PLAN-" + str(self.count).encode()

    @staticmethod
    def deserialize(plan: bytes) -> str | None:
        return plan.decode() if plan.startswith(b"PLAN") else None


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "b" * 64},
        {"trt_version": "10.4.0"},
        {"gpu_name": "NVIDIA L4"},
        {"compute_capability": "8.9"},
        {"precision": "fp32"},
        {"profile": (("image", (1, 1, 8, 8), (4, 1, 64, 64), (64, 1, 512, 512)),)},
    ],
)
def test_every_key_field_changes_the_file(change: dict[str, object]) -> None:
    other = dataclasses.replace(KEY, **change)  # type: ignore[arg-type]
    assert other.filename() != KEY.filename()
    assert KEY.filename() == dataclasses.replace(KEY).filename()


def test_second_load_hits_the_cache(tmp_path: Path) -> None:
    cache, builds = PlanCache(tmp_path / "engine-cache"), Builds()
    assert load_or_build(cache, KEY, builds.build, builds.deserialize) == ("PLAN-1", False)
    assert load_or_build(cache, KEY, builds.build, builds.deserialize) == ("PLAN-1", True)
    assert builds.count == 1
    assert cache.plan_path(KEY).parent == tmp_path / "engine-cache"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no-sidecar", "other-key"])
def test_corrupt_cached_plan_is_rebuilt(tmp_path: Path, damage: str) -> None:
    cache, builds = PlanCache(tmp_path), Builds()
    load_or_build(cache, KEY, builds.build, builds.deserialize)
    plan, meta = cache.plan_path(KEY), cache.meta_path(KEY)
    if damage == "truncate":
        plan.write_bytes(plan.read_bytes()[:3])
    elif damage == "garbage":
        meta.write_text("{not json")
    elif damage == "no-sidecar":
        meta.unlink()
    else:
        meta.write_text(meta.read_text().replace("10.3.0", "9.9.9"))
    engine, hit = load_or_build(cache, KEY, builds.build, builds.deserialize)
    assert (engine, hit) == ("PLAN-2", False)
    assert cache.read(KEY) == b"PLAN-2"


def test_plan_the_runtime_rejects_is_rebuilt(tmp_path: Path) -> None:
    # Intact file and checksum, but TensorRT refuses it (e.g. an incompatible runtime).
    cache, builds = PlanCache(tmp_path), Builds()
    cache.write(KEY, b"STALE")
    assert load_or_build(cache, KEY, builds.build, builds.deserialize) == ("PLAN-1", False)

    def explode(plan: bytes) -> str:
        if plan == b"PLAN-1":
            raise RuntimeError("serialization assertion failed")
        return plan.decode()

    assert load_or_build(cache, KEY, builds.build, explode) == ("PLAN-2", False)


def test_a_build_that_cannot_deserialize_is_an_error(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path)
    with pytest.raises(RuntimeError, match="failed to deserialize"):
        load_or_build(cache, KEY, lambda: b"junk", Builds.deserialize)
    assert not cache.plan_path(KEY).exists()


def test_profile_and_key_from_manifest(zoo: Path) -> None:
    manifest = load_manifest(zoo / "tiny")
    profile = optimisation_profile(manifest, opt_batch=16)
    assert profile == (("image", (1, 1, 8, 8), (16, 1, 64, 64), (64, 1, 512, 512)),)
    assert optimisation_profile(manifest, opt_batch=1000)[0][2][0] == 64
    fixed = optimisation_profile(load_manifest(zoo / "tiny4"), opt_batch=8)
    assert fixed == (("image", (4, 1, 8, 8), (4, 1, 64, 64), (4, 1, 512, 512)),)
    key = plan_key(manifest, trt_version="10.3", gpu_name="GPU", capability=(6, 1),
                   precision="fp16", opt_batch=8)
    assert key.precision == "fp32"  # Pascal consumer GPUs have no fast FP16
    assert key.model_sha256 == manifest.sha256
    assert effective_precision("fp16", (8, 9)) == "fp16"
    assert effective_precision("fp32", (9, 0)) == "fp32"


def test_timing_cache_path_is_safe(tmp_path: Path) -> None:
    path = PlanCache(tmp_path).timing_cache_path("10.3.0", "NVIDIA GeForce RTX 4090/x")
    assert path.parent == tmp_path
    assert "/" not in path.name and " " not in path.name
