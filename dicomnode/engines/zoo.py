"""The model zoo on disk: one folder per model, each checked before anything loads it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dicomnode.engines.errors import EngineError, ModelNotFoundError
from dicomnode.engines.manifest import (
    CARD_FILE,
    MANIFEST_FILE,
    Manifest,
    load_manifest,
    verify_model_file,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooEntry:
    """A model folder and what checking it found: a manifest and its ONNX path, or why not."""

    name: str
    directory: Path
    manifest: Manifest | None
    onnx_path: Path | None
    error: EngineError | None
    has_card: bool

    @property
    def ok(self) -> bool:
        return self.error is None

    def require(self) -> tuple[Manifest, Path]:
        """The manifest and verified ONNX path; raises the refusal for a refused model."""
        if self.error is not None:
            raise self.error
        assert self.manifest is not None and self.onnx_path is not None
        return self.manifest, self.onnx_path


def check_model(directory: Path) -> ZooEntry:
    """Validate the manifest and the file's sha256 of one model folder; never raises for them."""
    has_card = (directory / CARD_FILE).is_file()
    try:
        manifest = load_manifest(directory)
    except EngineError as exc:
        return ZooEntry(directory.name, directory, None, None, exc, has_card)
    try:
        onnx_path = verify_model_file(manifest, directory)
    except EngineError as exc:
        return ZooEntry(manifest.name, directory, manifest, None, exc, has_card)
    if not has_card:
        logger.warning("model %r has no %s describing its use and limits", manifest.name, CARD_FILE)
    return ZooEntry(manifest.name, directory, manifest, onnx_path, None, has_card)


def model_dirs(models_dir: Path) -> list[Path]:
    """Folders under `models_dir` that hold a manifest, sorted by name."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists())


def scan_zoo(models_dir: Path) -> list[ZooEntry]:
    entries = [check_model(d) for d in model_dirs(models_dir)]
    for entry in entries:
        if entry.error is not None:
            logger.error("%s", entry.error)
    return entries


def find_model(models_dir: Path, name: str) -> ZooEntry:
    """Check the one model called `name`; raises ModelNotFoundError naming what exists."""
    directory = models_dir / name
    if "/" in name or name.startswith(".") or not (directory / MANIFEST_FILE).exists():
        known = ", ".join(d.name for d in model_dirs(models_dir)) or "none"
        raise ModelNotFoundError(
            f"no model {name!r} in {models_dir} (models there: {known}); a model is a folder "
            f"with {MANIFEST_FILE} and its ONNX file"
        )
    return check_model(directory)
