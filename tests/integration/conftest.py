"""Fixtures for tests against real peers: Orthanc and dcmtk, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dcmtk import dcmtk_available
from tests.support.orthanc import Orthanc, orthanc_available
from tests.support.require import require


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    require(orthanc_available(), "Orthanc is not installed (apt-get install orthanc)")
    with Orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    require(dcmtk_available(), "dcmtk is not installed (apt-get install dcmtk)")
