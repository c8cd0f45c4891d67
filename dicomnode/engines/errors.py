"""Errors of the engine layer; each names the model it concerns."""

from __future__ import annotations

from dicomnode.errors import DicomNodeError


class EngineError(DicomNodeError):
    """Base of every engine-layer error."""


class ManifestError(EngineError):
    """A model's manifest is missing, unreadable or invalid; the message names the key."""


class ChecksumError(EngineError):
    """A model file does not match the sha256 in its manifest: the model is refused."""


class ModelNotFoundError(EngineError):
    """No model of that name in the zoo."""


class BackendUnavailableError(EngineError):
    """The requested backend cannot run here (package missing, no GPU)."""


class EngineRunError(EngineError):
    """Inputs do not fit the model, or the backend failed while running it."""
