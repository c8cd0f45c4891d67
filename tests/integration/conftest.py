"""Fixtures for tests against real peers: Orthanc and dcmtk, on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dcmtk import dcmtk_available
from tests.support.orthanc import Orthanc, orthanc_available


def _require(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed; .ci/run must install it")
    pytest.skip(f"{what} is not installed (apt-get install orthanc dcmtk)")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    _require(orthanc_available(), "Orthanc")
    with Orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    _require(dcmtk_available(), "dcmtk (storescu, echoscu, storescp)")
