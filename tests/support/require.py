"""Real peers and tools are required in CI and skipped, with the reason, elsewhere."""

from __future__ import annotations

import os

import pytest


def require(available: bool, reason: str) -> None:
    """`reason` says what is missing and how to install it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run must install it")
    pytest.skip(reason)
