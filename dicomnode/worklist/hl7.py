"""HL7 v2 priority messages to the RIS for critical and urgent studies, sent over MLLP.

The message is an ORM^O01 "change order" (ORC-1 ``XO``) for the study's order, found by
its accession number (OBR-18, the IHE Scheduled Workflow placement, and OBR-3), with the
new priority in ORC-7.6 / OBR-27.6 (and OBR-5, which many RIS still read): ``S`` (stat)
for critical, ``A`` (ASAP) for urgent. Two OBX segments carry the anomaly score (NM) and
the triage category (ST). Text is UTF-8 (MSH-18 ``UNICODE UTF-8``).

Retries belong to the node's outbox: `Hl7Notifier.send` makes one attempt and raises
`Hl7DeliveryError` (a `DeliveryError`, with ``permanent`` set when retrying cannot help).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from hl7apy.core import Message  # type: ignore[import-untyped]
from hl7apy.exceptions import HL7apyException  # type: ignore[import-untyped]
from hl7apy.parser import parse_message  # type: ignore[import-untyped]
from hl7apy.v2_5 import ST  # type: ignore[import-untyped]

from dicomnode.config import Hl7Config
from dicomnode.errors import DeliveryError

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
HL7_VERSION = "2.5"
PRIORITY = {"critical": "S", "urgent": "A"}  # HL7 table 0027
_MAX_ACK_BYTES = 1 << 20


class Hl7DeliveryError(DeliveryError):
    """The RIS could not be reached, or did not accept the message."""


class Hl7Subject(Protocol):
    """What a message needs from a study; both worklist dataclasses provide it."""

    @property
    def study_uid(self) -> str: ...
    @property
    def accession_number(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def patient_name(self) -> str: ...
    @property
    def study_description(self) -> str: ...
    @property
    def score(self) -> float | None: ...
    @property
    def category(self) -> str | None: ...


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1: AA (or CA, commit accept, in enhanced mode)
    control_id: str  # MSA-2: the control id of the message acknowledged
    text: str  # MSA-3, possibly empty
    raw: str


def build_priority_message(
    entry: Hl7Subject,
    *,
    sending_application: str = "DICOMNODE",
    sending_facility: str = "",
    receiving_application: str = "RIS",
    receiving_facility: str = "",
    control_id: str | None = None,
    now: float | None = None,
) -> str:
    """The ORM^O01 message (ER7, segments separated by CR) for a critical or urgent study."""
    if entry.category not in PRIORITY:
        raise ValueError(
            f"no HL7 priority for category {entry.category!r}; only critical and urgent are sent"
        )
    if not entry.accession_number:
        raise ValueError("the study has no accession number; the RIS cannot find its order")
    priority = PRIORITY[entry.category]
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() if now is None else now))
    msg = Message("ORM_O01", version=HL7_VERSION)
    msh = msg.msh
    msh.msh_3.msh_3_1 = sending_application
    msh.msh_4.msh_4_1 = sending_facility
    msh.msh_5.msh_5_1 = receiving_application
    msh.msh_6.msh_6_1 = receiving_facility
    msh.msh_7 = stamp
    msh.msh_9 = "ORM^O01^ORM_O01"
    msh.msh_10 = control_id or uuid.uuid4().hex[:20]  # ST, at most 20 characters
    msh.msh_11 = "P"
    msh.msh_18 = "UNICODE UTF-8"

    # Text from DICOM goes in as ST leaves: the library then escapes | ^ & ~ and \\ in it.
    patient = msg.add_group("ORM_O01_PATIENT")
    patient.pid.pid_1 = "1"
    patient.pid.pid_3.pid_3_1 = ST(entry.patient_id)
    family, _, rest = entry.patient_name.partition("^")
    patient.pid.pid_5.pid_5_1.fn_1 = ST(family)
    if rest:
        patient.pid.pid_5.pid_5_2 = ST(rest.split("^", 1)[0])

    order = msg.add_group("ORM_O01_ORDER")
    order.orc.orc_1 = "XO"
    order.orc.orc_3.orc_3_1 = ST(entry.accession_number)
    order.orc.orc_5 = "SC"  # order status: in process, scheduled
    order.orc.orc_7.orc_7_6 = priority
    order.orc.orc_9 = stamp

    detail = order.add_group("ORM_O01_ORDER_DETAIL")
    obr = detail.obr
    obr.obr_1 = "1"
    obr.obr_3.obr_3_1 = ST(entry.accession_number)
    obr.obr_4.obr_4_1 = "ANOMALY_TRIAGE"
    obr.obr_4.obr_4_2 = ST(entry.study_description or "Imaging study")
    obr.obr_4.obr_4_3 = "L"
    obr.obr_5 = priority
    obr.obr_18 = ST(entry.accession_number)
    obr.obr_27.obr_27_6 = priority

    _observation(detail, 1, "NM", "ANOMALY_SCORE", "AI anomaly score",
                 "" if entry.score is None else f"{entry.score:.1f}")
    _observation(detail, 2, "ST", "TRIAGE_CATEGORY", "AI triage category", entry.category)
    message: str = msg.to_er7()
    return message


def _observation(detail: Message, set_id: int, value_type: str, code: str, text: str, value: str) -> None:
    obx = detail.add_group("ORM_O01_OBSERVATION").obx
    obx.obx_1 = str(set_id)
    obx.obx_2 = value_type
    obx.obx_3.obx_3_1 = code
    obx.obx_3.obx_3_2 = text
    obx.obx_3.obx_3_3 = "L"  # local coding system
    obx.obx_5 = value
    obx.obx_11 = "F"


def control_id_of(message: str) -> str:
    parsed = parse_message(message, find_groups=False)
    value: str = parsed.msh.msh_10.value
    return value


def send_mllp(host: str, port: int, message: str, timeout: float) -> Ack:
    """Send one message over MLLP and return its ACK; raise `Hl7DeliveryError` unless accepted."""
    control_id = control_id_of(message)
    frame = START_BLOCK + message.encode("utf-8") + END_BLOCK
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(frame)
            raw = _read_frame(sock)
    except TimeoutError as exc:
        raise Hl7DeliveryError(f"HL7 peer {host}:{port} did not answer within {timeout:g} s",
                               permanent=False) from exc
    except OSError as exc:
        raise Hl7DeliveryError(f"HL7 exchange with {host}:{port} failed: {exc}", permanent=False) from exc
    ack = parse_ack(raw)
    if ack.control_id != control_id:
        raise Hl7DeliveryError(
            f"HL7 peer {host}:{port} acknowledged message {ack.control_id!r}, not {control_id!r}",
            permanent=False,
        )
    if ack.code not in ("AA", "CA"):
        # AE: the receiver found the message wrong (resending it cannot help); AR: it could not
        # process it now (it may later).
        permanent = ack.code in ("AE", "CE")
        detail = f": {ack.text}" if ack.text else ""
        raise Hl7DeliveryError(f"HL7 peer {host}:{port} answered {ack.code}{detail}", permanent=permanent)
    return ack


def _read_frame(sock: socket.socket) -> str:
    buffer = b""
    while END_BLOCK not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the ACK was complete")
        buffer += chunk
        if len(buffer) > _MAX_ACK_BYTES:
            raise ConnectionError("ACK larger than 1 MiB")
    start = buffer.find(START_BLOCK)
    end = buffer.find(END_BLOCK)
    if start < 0 or start > end:
        raise ConnectionError("reply is not MLLP framed")
    return buffer[start + 1:end].decode("utf-8", errors="replace")


def parse_ack(raw: str) -> Ack:
    """Read MSA-1..3 from an ACK; a reply that is not an HL7 ACK raises `Hl7DeliveryError`."""
    try:
        parsed = parse_message(raw.replace("\n", "\r").strip("\r"), find_groups=False)
        msa = parsed.msa
        return Ack(code=msa.msa_1.value, control_id=msa.msa_2.value,
                   text=msa.msa_3.value if msa.msa_3 else "", raw=raw)
    except (HL7apyException, AttributeError, IndexError) as exc:
        raise Hl7DeliveryError(f"reply is not an HL7 ACK: {exc}", permanent=False) from exc


class Hl7Notifier:
    """Tells the RIS about critical and urgent studies (one attempt per call)."""

    def __init__(
        self,
        config: Hl7Config,
        *,
        sending_application: str = "DICOMNODE",
        receiving_application: str = "RIS",
        timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.sending_application = sending_application
        self.receiving_application = receiving_application
        self.timeout = timeout

    @staticmethod
    def wants(entry: Hl7Subject) -> bool:
        """Whether the study's category calls for a message (critical or urgent)."""
        return entry.category in PRIORITY

    def send(self, entry: Hl7Subject) -> None:
        """Send the priority message; routine and uncategorised studies are skipped.

        Raises `Hl7DeliveryError` when the RIS is unreachable or does not accept the message,
        and ValueError when the study lacks an accession number.
        """
        if not self.wants(entry):
            log.debug("no HL7 message for study %s (category %s)", entry.study_uid, entry.category)
            return
        message = build_priority_message(
            entry, sending_application=self.sending_application,
            receiving_application=self.receiving_application,
        )
        send_mllp(self.config.host, self.config.port, message, self.timeout)
        log.info("HL7 priority %s sent for study %s to %s:%d", PRIORITY[str(entry.category)],
                 entry.study_uid, self.config.host, self.config.port)
