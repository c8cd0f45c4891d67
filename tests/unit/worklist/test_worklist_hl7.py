"""HL7 priority messages, sent over MLLP to a real listener on a loopback port."""

from __future__ import annotations

import dataclasses
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hl7apy.core import Message  # type: ignore[import-untyped]
from hl7apy.parser import parse_message  # type: ignore[import-untyped]

from dicomnode.config import Hl7Config
from dicomnode.worklist.hl7 import (
    Hl7DeliveryError,
    Hl7Notifier,
    build_priority_message,
    send_mllp,
)
from tests.unit.worklist.helpers import triage_entry

START, END = b"\x0b", b"\x1c\x0d"


class MllpListener(socketserver.ThreadingTCPServer):
    """A real MLLP server on a loopback port: records each message and replies with `answer`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Callable[[Any], bytes | None]) -> None:
        super().__init__(("127.0.0.1", 0), _MllpHandler)
        self.answer = answer
        self.received: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _MllpHandler(socketserver.BaseRequestHandler):
    server: MllpListener

    def handle(self) -> None:
        buffer = b""
        while END not in buffer:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            buffer += chunk
        text = buffer[buffer.index(START) + 1:buffer.index(END)].decode("utf-8")
        self.server.received.append(text)
        reply = self.server.answer(parse_message(text, find_groups=False))
        if reply is not None:
            self.request.sendall(reply)


def ack_for(message: Any, code: str, text: str = "", control_id: str | None = None) -> bytes:
    ack = Message("ACK", version="2.5")
    ack.msh.msh_3 = "RIS"
    ack.msh.msh_9 = "ACK^O01^ACK"
    ack.msh.msh_10 = "ACK0001"
    ack.msh.msh_11 = "P"
    ack.msa.msa_1 = code
    ack.msa.msa_2 = control_id if control_id is not None else message.msh.msh_10.value
    if text:
        ack.msa.msa_3 = text
    return START + ack.to_er7().encode("utf-8") + END


@pytest.fixture
def listener_factory() -> Iterator[Callable[[Callable[[Any], bytes | None]], MllpListener]]:
    started: list[tuple[MllpListener, threading.Thread]] = []

    def start(answer: Callable[[Any], bytes | None]) -> MllpListener:
        listener = MllpListener(answer)
        thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((listener, thread))
        return listener

    yield start
    for listener, thread in started:
        listener.shutdown()
        listener.server_close()
        thread.join(5)


def segment(message: Any, name: str) -> Any:
    return next(s for s in message.children if s.name == name)


def test_critical_study_is_sent_stat_and_acknowledged(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: ack_for(m, "AA"))
    entry = triage_entry("1.2.840.1", "critical", 87.46, accession_number="ACC123")
    Hl7Notifier(Hl7Config("127.0.0.1", listener.port), timeout=5).send(entry)

    assert len(listener.received) == 1
    msg = parse_message(listener.received[0], find_groups=False)
    assert msg.msh.msh_9.to_er7() == "ORM^O01^ORM_O01"
    orc, obr = segment(msg, "ORC"), segment(msg, "OBR")
    assert orc.orc_7.orc_7_6.value == "S"
    assert obr.obr_27.obr_27_6.value == "S"
    assert obr.obr_5.value == "S"
    assert obr.obr_18.value == "ACC123"
    assert obr.obr_3.obr_3_1.value == "ACC123"
    observations = {o.obx_3.obx_3_1.value: (o.obx_2.value, o.obx_5.value)
                    for o in msg.children if o.name == "OBX"}
    assert observations == {"ANOMALY_SCORE": ("NM", "87.5"), "TRIAGE_CATEGORY": ("ST", "critical")}
    assert segment(msg, "PID").pid_3.pid_3_1.value == "PID-1"


def test_urgent_study_is_asap(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: ack_for(m, "AA"))
    Hl7Notifier(Hl7Config("127.0.0.1", listener.port)).send(triage_entry("1.2.840.2", "urgent", 45.0))
    msg = parse_message(listener.received[0], find_groups=False)
    assert segment(msg, "ORC").orc_7.orc_7_6.value == "A"


def test_send_mllp_returns_the_validated_ack(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: ack_for(m, "AA", "ok"))
    message = build_priority_message(triage_entry("1.2.840.3", "urgent", 50.0), control_id="CTRL42")
    ack = send_mllp("127.0.0.1", listener.port, message, timeout=5)
    assert (ack.code, ack.control_id, ack.text) == ("AA", "CTRL42", "ok")


def test_negative_ack_raises(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: ack_for(m, "AE", "unknown accession"))
    notifier = Hl7Notifier(Hl7Config("127.0.0.1", listener.port), timeout=5)
    with pytest.raises(Hl7DeliveryError, match="AE: unknown accession") as caught:
        notifier.send(triage_entry("1.2.840.4", "critical", 90.0))
    assert caught.value.permanent


def test_reject_is_retryable(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: ack_for(m, "AR"))
    with pytest.raises(Hl7DeliveryError, match="answered AR") as caught:
        Hl7Notifier(Hl7Config("127.0.0.1", listener.port)).send(triage_entry("1.2.840.5", "critical", 90.0))
    assert not caught.value.permanent


def test_ack_for_another_message_raises(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: ack_for(m, "AA", control_id="SOMETHING-ELSE"))
    with pytest.raises(Hl7DeliveryError, match="acknowledged message 'SOMETHING-ELSE'"):
        Hl7Notifier(Hl7Config("127.0.0.1", listener.port)).send(triage_entry("1.2.840.6", "urgent", 50.0))


def test_peer_hanging_up_without_ack_raises(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: None)  # reads the message, answers nothing, hangs up
    with pytest.raises(Hl7DeliveryError, match="failed: connection closed"):
        Hl7Notifier(Hl7Config("127.0.0.1", listener.port), timeout=2).send(
            triage_entry("1.2.840.7", "urgent", 50.0))


def test_silent_peer_times_out(listener_factory: Any) -> None:
    release = threading.Event()

    def hold(message: Any) -> bytes | None:
        release.wait(10)  # keeps the connection open without answering
        return None

    listener = listener_factory(hold)
    try:
        with pytest.raises(Hl7DeliveryError, match=r"did not answer within 0\.3 s"):
            Hl7Notifier(Hl7Config("127.0.0.1", listener.port), timeout=0.3).send(
                triage_entry("1.2.840.7", "urgent", 50.0))
    finally:
        release.set()


def test_unreachable_peer_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(Hl7DeliveryError, match=f"127.0.0.1:{port}") as caught:
            Hl7Notifier(Hl7Config("127.0.0.1", port), timeout=2).send(
                triage_entry("1.2.840.8", "critical", 1.0))
    assert not caught.value.permanent


def test_routine_studies_send_nothing(listener_factory: Any) -> None:
    listener = listener_factory(lambda m: ack_for(m, "AA"))
    notifier = Hl7Notifier(Hl7Config("127.0.0.1", listener.port))
    notifier.send(triage_entry("1.2.840.9", "routine", 5.0))
    notifier.send(triage_entry("1.2.840.10", None, None))
    # A critical one afterwards is the first (and only) message the listener sees.
    notifier.send(triage_entry("1.2.840.11", "critical", 95.0, accession_number="LAST"))
    assert len(listener.received) == 1
    assert segment(parse_message(listener.received[0], find_groups=False), "OBR").obr_18.value == "LAST"


def test_values_are_escaped_not_concatenated() -> None:
    entry = dataclasses.replace(triage_entry("1.2.840.12", "critical", 70.0, accession_number="A|B^C&D~E"),
                                patient_name="O|Brien^Ann&Lee", study_description="CT \\ head^x")
    msg = parse_message(build_priority_message(entry), find_groups=False)
    obr = segment(msg, "OBR")
    assert obr.obr_18.value == r"A\F\B\S\C\T\D\R\E"  # one escaped field, not split into components
    assert obr.obr_27.obr_27_6.value == "S"  # the fields after it did not shift
    assert obr.obr_4.obr_4_2.value == r"CT \E\ head\S\x"
    pid = segment(msg, "PID")
    assert pid.pid_5.to_er7() == r"O\F\Brien^Ann\T\Lee"


def test_message_needs_accession_and_priority() -> None:
    with pytest.raises(ValueError, match="accession"):
        build_priority_message(triage_entry("1.2.840.13", "critical", 70.0, accession_number=""))
    with pytest.raises(ValueError, match="only critical and urgent"):
        build_priority_message(triage_entry("1.2.840.14", "routine", 1.0))
