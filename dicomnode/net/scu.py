"""The DICOM sender: C-STORE files to a peer exactly as they are on disk.

Files go out without decoding (pynetdicom's chunked send), so a forwarded instance is
byte-identical to what was received. The caller learns the fate of each file through
callbacks, so progress can be recorded durably as it happens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association

from dicomnode.errors import DeliveryError
from dicomnode.net.sockets import set_nodelay_on_open
from dicomnode.status import Status, is_transient_failure

log = logging.getLogger(__name__)

_MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1-255
_REJECT_PERMANENT = 0x01

_config.STORE_SEND_CHUNKED_DATASET = True  # send the encoded file, never re-encode it


class _NoContextAccepted(Exception):
    """The peer accepted the association but none of the proposed presentation contexts."""


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    ae_title: str
    calling_ae_title: str
    timeout: float = 30.0


@dataclass(frozen=True)
class OutgoingFile:
    path: Path
    sop_class_uid: str
    transfer_syntax: str


def describe_file(path: Path) -> OutgoingFile:
    """Read only the file meta of a DICOM Part 10 file; InvalidDicomError if it has none."""
    meta = read_file_meta_info(path)
    sop_class = meta.get("MediaStorageSOPClassUID")
    syntax = meta.get("TransferSyntaxUID")
    if not sop_class or not syntax or not meta.get("MediaStorageSOPInstanceUID"):
        raise InvalidDicomError(f"{path}: file meta lacks SOP class, instance or transfer syntax")
    return OutgoingFile(path, str(sop_class), str(syntax))


def echo(peer: Peer) -> bool:
    try:
        assoc = _associate(peer, [("1.2.840.10008.1.1", "1.2.840.10008.1.2")])
    except _NoContextAccepted:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == Status.SUCCESS
    finally:
        assoc.release()


def send_files(
    peer: Peer,
    files: Sequence[OutgoingFile],
    on_sent: Callable[[int], None],
    on_refused: Callable[[int, str], None],
) -> None:
    """Send `files` in order. Calls on_sent(i) or on_refused(i, reason) for each one.

    Raises DeliveryError(permanent=False) when sending should be retried later from the
    first file not yet reported (peer unreachable, out of resources, connection lost),
    and DeliveryError(permanent=True) when the peer refuses the association for good.
    """
    start = 0
    while start < len(files):
        contexts: list[tuple[str, str]] = []
        end = start
        while end < len(files):
            pair = (files[end].sop_class_uid, files[end].transfer_syntax)
            if pair not in contexts:
                if len(contexts) == _MAX_CONTEXTS:
                    break
                contexts.append(pair)
            end += 1
        _send_batch(peer, files, start, end, contexts, on_sent, on_refused)
        start = end


def _send_batch(
    peer: Peer,
    files: Sequence[OutgoingFile],
    start: int,
    end: int,
    contexts: list[tuple[str, str]],
    on_sent: Callable[[int], None],
    on_refused: Callable[[int, str], None],
) -> None:
    try:
        assoc = _associate(peer, contexts)
    except _NoContextAccepted as exc:
        for i in range(start, end):
            on_refused(i, str(exc))
        return
    try:
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        for i in range(start, end):
            f = files[i]
            if (f.sop_class_uid, f.transfer_syntax) not in accepted:
                on_refused(i, f"{peer.ae_title} does not accept SOP class {f.sop_class_uid} "
                              f"in transfer syntax {f.transfer_syntax}")
                continue
            try:
                rsp: Dataset = assoc.send_c_store(f.path)
            except (OSError, ValueError, AttributeError) as exc:
                on_refused(i, f"cannot send {f.path.name}: {exc}")
                continue
            if not rsp or "Status" not in rsp:
                raise DeliveryError(f"no answer from {peer.ae_title} (connection lost or timed out)",
                                    permanent=False)
            code = int(rsp.Status)
            category = Status.category(code)
            if category in ("success", "warning"):
                on_sent(i)
            elif is_transient_failure(code):
                raise DeliveryError(f"{peer.ae_title} is out of resources (0x{code:04X})",
                                    permanent=False)
            else:
                comment = str(rsp.get("ErrorComment", "")).strip()
                on_refused(i, f"{peer.ae_title} refused with status 0x{code:04X}"
                              + (f": {comment}" if comment else ""))
    finally:
        if assoc.is_established:
            assoc.release()
        elif assoc.is_alive():
            assoc.abort()


def _associate(peer: Peer, contexts: list[tuple[str, str]]) -> Association:
    ae = AE(ae_title=peer.calling_ae_title)
    ae.acse_timeout = peer.timeout
    ae.dimse_timeout = peer.timeout
    ae.network_timeout = peer.timeout
    ae.connection_timeout = peer.timeout
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay_on_open)])
    if assoc.is_established:
        return assoc
    where = f"{peer.ae_title} at {peer.host}:{peer.port}"
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        permanent = rj is not None and rj.result == _REJECT_PERMANENT
        reason = rj.result_str if rj is not None else "unknown"
        detail = f"{where} rejected the association ({reason}"
        detail += f", {rj.reason_str})" if rj is not None else ")"
        raise DeliveryError(detail, permanent=permanent)
    if assoc.is_aborted and assoc.rejected_contexts and not assoc.accepted_contexts:
        # pynetdicom aborts on our side when nothing is accepted: the peer's answer is final.
        kinds = ", ".join(sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts}))
        raise _NoContextAccepted(f"{peer.ae_title} does not accept SOP class {kinds} in the files' "
                                 "transfer syntax")
    if assoc.acceptor.primitive is None:
        raise DeliveryError(f"cannot connect to {where} (refused, unreachable or no answer)",
                            permanent=False)
    raise DeliveryError(f"{where} aborted the association", permanent=False)
