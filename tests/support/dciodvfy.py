"""dicom3tools' dciodvfy: the IOD validator every object the node sends back must pass."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def dciodvfy_available() -> bool:
    return shutil.which("dciodvfy") is not None


def require_dciodvfy() -> None:
    """Skip when dciodvfy is missing, except under CI, where its absence is a failure."""
    if dciodvfy_available():
        return
    if os.environ.get("CI"):
        pytest.fail("dciodvfy (dicom3tools) is not installed, and CI requires it")
    pytest.skip("dciodvfy (dicom3tools) is not installed")


def messages(path: Path) -> list[str]:
    """Every line dciodvfy prints for `path` (it writes findings to stderr, the IOD name to stdout)."""
    result = subprocess.run(
        ["dciodvfy", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def validate(path: Path) -> list[str]:
    """The error lines dciodvfy reports for `path`; empty means the object is valid."""
    return [line for line in messages(path) if line.startswith("Error")]


def warnings(path: Path) -> list[str]:
    """The warning lines dciodvfy reports for `path`."""
    return [line for line in messages(path) if line.startswith("Warning")]
