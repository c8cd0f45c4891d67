"""Socket options for every DICOM connection the node opens or accepts."""

from __future__ import annotations

import logging
import socket

from pynetdicom import evt

log = logging.getLogger(__name__)


def set_nodelay_on_open(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle's algorithm off.

    DICOM sends a small command PDU and waits for its answer; with Nagle on, each such
    exchange can stall for a delayed ACK (about 40 ms on Linux).
    """
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the peer may already have gone
            log.debug("could not set TCP_NODELAY: %s", exc)
