"""Which peers may associate: node.allowed_peers."""

from __future__ import annotations

import logging

import pytest

from dicomnode.config import Peer
from dicomnode.net.policy import PeerPolicy
from dicomnode.status import RejectReason

PEERS = [Peer("CT01", "10.0.0.5"), Peer("MR01")]


@pytest.mark.parametrize(("calling_ae", "host"), [("ANYONE", "1.2.3.4"), ("", "::1"), ("CT01", "10.0.0.5")])
def test_empty_policy_accepts_everyone(calling_ae: str, host: str) -> None:
    assert PeerPolicy([]).check(calling_ae, host) is None


def test_empty_policy_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dicomnode.net.policy"):
        PeerPolicy([])
    assert "allowed_peers" in caplog.text


def test_non_empty_policy_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dicomnode.net.policy"):
        PeerPolicy(PEERS)
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("calling_ae", "host", "allowed"),
    [
        ("CT01", "10.0.0.5", True),
        ("CT01      ", "10.0.0.5", True),  # AE titles arrive space-padded to 16
        (" CT01", "10.0.0.5", True),
        ("CT01", "10.0.0.6", False),  # host restriction
        ("CT01", "127.0.0.1", False),
        ("MR01", "10.9.9.9", True),  # no host given: any host
        ("MR01", "::1", True),
        ("ct01", "10.0.0.5", False),  # AE titles are compared exactly
        ("CT02", "10.0.0.5", False),
        ("", "10.0.0.5", False),
    ],
)
def test_ae_title_and_host_must_match(calling_ae: str, host: str, allowed: bool) -> None:
    result = PeerPolicy(PEERS).check(calling_ae, host)
    if allowed:
        assert result is None
    else:
        assert result is RejectReason.CALLING_AE_NOT_RECOGNISED


def test_same_ae_title_from_several_hosts() -> None:
    policy = PeerPolicy([Peer("CT01", "10.0.0.5"), Peer("CT01", "10.0.0.6")])
    assert policy.check("CT01", "10.0.0.5") is None
    assert policy.check("CT01", "10.0.0.6") is None
    assert policy.check("CT01", "10.0.0.7") is RejectReason.CALLING_AE_NOT_RECOGNISED


def test_rejection_is_calling_ae_not_recognised_with_its_triple() -> None:
    reason = PeerPolicy(PEERS).check("INTRUDER", "10.6.6.6")
    assert reason is RejectReason.CALLING_AE_NOT_RECOGNISED
    # rejected-permanent, service-user, calling-AE-title-not-recognized (PS3.8 9.3.4)
    assert reason.triple == (1, 1, 3)


@pytest.mark.parametrize(
    ("reason", "triple"),
    [
        (RejectReason.CALLING_AE_NOT_RECOGNISED, (1, 1, 3)),
        (RejectReason.CALLED_AE_NOT_RECOGNISED, (1, 1, 7)),
        (RejectReason.LOCAL_LIMIT_EXCEEDED, (2, 3, 2)),
    ],
)
def test_reject_reason_triples(reason: RejectReason, triple: tuple[int, int, int]) -> None:
    assert reason.triple == triple


def test_origin_of() -> None:
    policy = PeerPolicy(PEERS)
    assert policy.origin_of("MR01") == Peer("MR01")
    assert policy.origin_of("CT01  ") == Peer("CT01", "10.0.0.5")
    assert policy.origin_of("NOBODY") is None
    assert PeerPolicy([]).origin_of("CT01") is None
