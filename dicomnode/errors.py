"""The node's exception hierarchy; each error knows the DICOM status it maps to at the edge."""

from dicomnode.status import Status


class DicomNodeError(Exception):
    """Base of every error the node raises on purpose."""

    status: Status = Status.PROCESSING_FAILURE


class ConfigError(DicomNodeError):
    """The configuration or a rule file is invalid; the message names the key."""


class RuleError(ConfigError):
    """A rule file does not validate."""


class StorageFullError(DicomNodeError):
    """The spool cannot take another instance (disk full or quota reached)."""

    status = Status.OUT_OF_RESOURCES


class InvalidDatasetError(DicomNodeError):
    """A received dataset cannot be understood well enough to store it."""

    status = Status.CANNOT_UNDERSTAND


class DeliveryError(DicomNodeError):
    """A send to a destination failed; `permanent` says whether retrying can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent
