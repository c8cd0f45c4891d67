"""DICOM status codes the node returns or interprets (PS3.7 Annex C, PS3.4 Annex B).

This is the only module where the numbers appear.
"""

from enum import IntEnum


class Status(IntEnum):
    SUCCESS = 0x0000
    # Warnings (PS3.4 B.2.3)
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # Failures
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    PROCESSING_FAILURE = 0x0110

    @property
    def is_success(self) -> bool:
        return self == Status.SUCCESS

    @staticmethod
    def category(code: int) -> str:
        """Name the status category of any code received from a peer."""
        if code == 0x0000:
            return "success"
        if code in (0x0001, 0x0107, 0x0116) or code & 0xF000 == 0xB000:
            return "warning"
        if code in (0xFE00,):
            return "cancel"
        if code in (0xFF00, 0xFF01):
            return "pending"
        return "failure"


def is_transient_failure(code: int) -> bool:
    """True when a failed C-STORE is worth retrying later (the peer is out of resources)."""
    return code & 0xFF00 == 0xA700 or code == 0x0213  # 0x0213: resource limitation


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ (result, source, diagnostic) packed as 0xRRSSDD (PS3.8 9.3.4)."""

    CALLING_AE_NOT_RECOGNISED = 0x010103
    CALLED_AE_NOT_RECOGNISED = 0x010107
    LOCAL_LIMIT_EXCEEDED = 0x020302

    @property
    def triple(self) -> tuple[int, int, int]:
        return (self >> 16) & 0xFF, (self >> 8) & 0xFF, self & 0xFF
