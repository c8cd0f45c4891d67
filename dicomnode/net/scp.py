"""The DICOM listener: C-ECHO and C-STORE, answering success only once an instance is durable.

The C-STORE handler keeps the hot path thin: the dataset is written exactly as received
(no decode of the pixel data), fsync'd, linked into the spool and committed to the index
by the group-committing writer. Every failure maps to a standard status; nothing raises
into pynetdicom.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Literal, cast

import pydicom.uid as tsuid
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.config import NodeConfig
from dicomnode.errors import DicomNodeError, InvalidDatasetError, StorageFullError
from dicomnode.net.policy import PeerPolicy
from dicomnode.net.sockets import set_nodelay_on_open
from dicomnode.status import Status
from dicomnode.store.index import Index, InstanceRecord, int_attribute
from dicomnode.store.spool import Spool
from dicomnode.telemetry import Telemetry

log = logging.getLogger(__name__)

# Accepted as received and never decoded on the way in or out.
TRANSFER_SYNTAXES = [
    tsuid.ExplicitVRLittleEndian,
    tsuid.ImplicitVRLittleEndian,
    tsuid.DeflatedExplicitVRLittleEndian,
    tsuid.ExplicitVRBigEndian,
    tsuid.JPEGBaseline8Bit,
    tsuid.JPEGExtended12Bit,
    tsuid.JPEGLossless,
    tsuid.JPEGLosslessSV1,
    tsuid.JPEGLSLossless,
    tsuid.JPEGLSNearLossless,
    tsuid.JPEG2000Lossless,
    tsuid.JPEG2000,
    tsuid.HTJ2KLossless,
    tsuid.HTJ2KLosslessRPCL,
    tsuid.HTJ2K,
    tsuid.RLELossless,
]

_UID = re.compile(r"^[0-9.]{1,64}$")
_ERROR_COMMENT_MAX = 64  # LO


def _lenient_uid(value: Any) -> tuple[bool, str]:
    """Let pynetdicom decode any non-empty UID so the handler can answer a bad one itself.

    pynetdicom's own check aborts the association with no status for a UID over 64
    characters; the sender would never learn which instance was refused or why.
    """
    return (bool(value), "" if value else "must not be empty")


class StoreSCP:
    """Accepts associations on the node's address and stores what they send."""

    def __init__(self, config: NodeConfig, spool: Spool, index: Index, policy: PeerPolicy,
                 telemetry: Telemetry | None = None) -> None:
        self._config = config
        self._telemetry = telemetry
        self._spool = spool
        self._index = index
        self._policy = policy
        self._series_by_assoc: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        _config.VALIDATORS["UI"] = _lenient_uid
        ae = AE(ae_title=config.ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = config.max_associations
        ae.network_timeout = config.network_timeout
        ae.maximum_pdu_size = config.max_pdu_size
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, TRANSFER_SYNTAXES[:2])
        self._ae = ae

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_nodelay_on_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        self._server = self._ae.start_server(
            (self._config.host, self._config.port), block=False, evt_handlers=handlers
        )
        log.info("listening as %s on %s:%d", self._config.ae_title, self._config.host, self.port)

    def stop(self, drain_seconds: float = 30.0) -> None:
        """Refuse new associations, let those in flight finish, then abort stragglers."""
        if self._server is None:
            return
        server = self._server
        self._server = None
        active = server.active_associations
        server.shutdown()
        deadline = time.monotonic() + drain_seconds
        # Connections that never completed association negotiation hold no data: don't wait for them.
        while time.monotonic() < deadline and any(a.is_alive() and a.is_established for a in active):
            time.sleep(0.05)
        for assoc in active:
            if assoc.is_alive():
                if assoc.is_established:
                    log.warning("aborting association from %s still open at shutdown",
                                assoc.requestor.ae_title)
                assoc.abort()
        log.info("listener stopped")

    # -- association events ----------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        assoc: Association = event.assoc
        # pynetdicom copies the calling AE title into `requestor` only after this event.
        calling = str(assoc.requestor.primitive.calling_ae_title if assoc.requestor.primitive else "")
        host = assoc.requestor.address
        reason = self._policy.check(calling, host)
        if reason is not None:
            log.warning("rejected association from %s at %s: %s", calling, host, reason.name)
            assoc.acse.send_reject(*reason.triple)
            assoc.kill()
            self._count_association("rejected")

    def _on_rejected(self, event: evt.Event) -> None:
        """pynetdicom's own rejections (wrong called AE title, too many associations)."""
        log.warning("rejected association from %s", event.assoc.requestor.ae_title)
        self._count_association("rejected")

    def _count_association(self, result: Literal["accepted", "rejected"]) -> None:
        if self._telemetry is not None:
            self._telemetry.association(result)

    def _on_established(self, event: evt.Event) -> None:
        assoc = event.assoc
        self._count_association("accepted")
        with self._lock:
            self._series_by_assoc[id(assoc)] = set()
        log.info("association from %s at %s:%s accepted", assoc.requestor.ae_title,
                 assoc.requestor.address, assoc.requestor.port)

    def _on_released(self, event: evt.Event) -> None:
        with self._lock:
            series = self._series_by_assoc.pop(id(event.assoc), set())
        self._index.mark_released(series, time.time())
        log.info("association from %s released (%d series)", event.assoc.requestor.ae_title,
                 len(series))

    def _on_aborted(self, event: evt.Event) -> None:
        with self._lock:
            self._series_by_assoc.pop(id(event.assoc), None)
        log.warning("association from %s aborted", event.assoc.requestor.ae_title)

    # -- DIMSE services --------------------------------------------------------------

    def _on_echo(self, event: evt.Event) -> int:
        return int(Status.SUCCESS)

    def _on_store(self, event: evt.Event) -> Dataset | int:
        data: bytes | None = None
        try:
            self._spool.check_space()
            request = cast(C_STORE, event.request)
            request_uid = str(request.AffectedSOPInstanceUID or "")
            if not _UID.match(request_uid):
                raise InvalidDatasetError(f"request SOP Instance UID {_describe(request_uid)}")
            if self._index.contains(request_uid):
                log.info("instance already stored, not stored again")
                return int(Status.SUCCESS)
            data = event.encoded_dataset(include_meta=True)
            record = self._describe_instance(event, data, request_uid)
            self._spool.write(Path(record.path), data)
            if self._index.add(record):
                with self._lock:
                    self._series_by_assoc.setdefault(id(event.assoc), set()).add(record.series_uid)
                if self._telemetry is not None:
                    self._telemetry.instances_received.inc()
            return int(Status.SUCCESS)
        except StorageFullError as exc:
            log.error("refusing instance, out of resources: %s", exc)
            return _failure(Status.OUT_OF_RESOURCES, "Out of storage space")
        except InvalidDatasetError as exc:
            where = self._spool.quarantine_bytes(data or _raw_dataset(event), str(exc))
            log.warning("refusing instance from %s: %s (kept in %s)",
                        event.assoc.requestor.ae_title, exc, where)
            return _failure(exc.status, str(exc))
        except DicomNodeError as exc:
            log.error("refusing instance: %s", exc)
            return _failure(exc.status, str(exc))
        except OSError as exc:
            log.error("cannot store instance: %s", exc)
            return _failure(Status.OUT_OF_RESOURCES, f"Storage error: {exc.strerror}")
        except Exception:
            log.exception("unexpected error while storing an instance")
            return _failure(Status.PROCESSING_FAILURE, "Internal error in the receiving node")

    def _describe_instance(self, event: evt.Event, data: bytes, request_uid: str) -> InstanceRecord:
        try:
            ds = dcmread(BytesIO(data), stop_before_pixels=True)
            sop_instance_uid = _uid(ds, "SOPInstanceUID")
            series_uid = _uid(ds, "SeriesInstanceUID")
            record = InstanceRecord(
                sop_instance_uid=sop_instance_uid,
                series_uid=series_uid,
                study_uid=_uid(ds, "StudyInstanceUID"),
                sop_class_uid=str(cast(C_STORE, event.request).AffectedSOPClassUID),
                transfer_syntax=str(event.context.transfer_syntax),
                instance_number=int_attribute(ds, "InstanceNumber"),
                acquisition_number=int_attribute(ds, "AcquisitionNumber"),
                images_in_acquisition=int_attribute(ds, "ImagesInAcquisition"),
                path=str(self._spool.path_for(series_uid, sop_instance_uid)),
                size=len(data),
                received_at=time.time(),
                calling_ae=event.assoc.requestor.ae_title,
                peer_host=event.assoc.requestor.address,
            )
        except InvalidDatasetError:
            raise
        except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
            raise InvalidDatasetError(f"data set cannot be parsed: {exc}") from exc
        if sop_instance_uid != request_uid:
            raise InvalidDatasetError("SOP Instance UID differs between request and data set")
        return record


def _uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    text = "" if value is None else str(value).strip("\0 ")
    if not _UID.match(text):
        raise InvalidDatasetError(f"{keyword} {_describe(text)}")
    return text


def _describe(uid: str) -> str:
    """Why a UID is invalid, short enough for an ErrorComment (64 characters)."""
    if not uid:
        return "missing"
    if len(uid) > 64:
        return f"has {len(uid)} chars, max 64"
    return "has chars other than 0-9 and ."


def _failure(status: Status, comment: str) -> Dataset:
    rsp = Dataset()
    rsp.Status = int(status)
    rsp.ErrorComment = comment[:_ERROR_COMMENT_MAX]
    return rsp


def _raw_dataset(event: evt.Event) -> bytes:
    try:
        return bytes(event.encoded_dataset(include_meta=False))
    except Exception:
        return b""
