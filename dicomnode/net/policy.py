"""Which peers may associate with the node (node.allowed_peers)."""

from __future__ import annotations

import logging

from dicomnode.config import Peer
from dicomnode.status import RejectReason

log = logging.getLogger(__name__)


class PeerPolicy:
    """An empty list accepts every calling AE; otherwise AE title (and host, if given) must match."""

    def __init__(self, peers: list[Peer]) -> None:
        self._peers = peers
        if not peers:
            log.warning("node.allowed_peers is empty: associations from any AE title are accepted")

    def check(self, calling_ae: str, host: str) -> RejectReason | None:
        """None when the peer is allowed, else the A-ASSOCIATE-RJ reason to send."""
        if not self._peers:
            return None
        calling = calling_ae.strip()
        for peer in self._peers:
            if peer.ae_title.strip() == calling and (peer.host is None or peer.host == host):
                return None
        # PS3.8 has no diagnostic for a wrong host: the calling AE is not recognised from there.
        return RejectReason.CALLING_AE_NOT_RECOGNISED

    def origin_of(self, calling_ae: str) -> Peer | None:
        for peer in self._peers:
            if peer.ae_title.strip() == calling_ae.strip():
                return peer
        return None
