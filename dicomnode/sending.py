"""`dicomnode send`: find DICOM files under the given paths and C-STORE them to one peer."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from dicomnode.errors import DeliveryError
from dicomnode.net import scu

log = logging.getLogger(__name__)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, and every file below named folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            log.warning("%s: no such file or folder", path)


def iter_dicom_headers(paths: Iterable[Path], *, pixels: bool = False) -> Iterator[tuple[Path, Dataset]]:
    """Each readable DICOM file with its dataset (headers only unless `pixels`); others logged."""
    for path in iter_files(paths):
        try:
            yield path, dcmread(path, stop_before_pixels=not pixels)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            log.warning("%s: not a readable DICOM file (%s)", path, exc)


def send_paths(paths: list[Path], host: str, port: int, called_ae: str, calling_ae: str,
               timeout: float) -> int:
    """Send every DICOM Part 10 file found; exit code 0 only when all were accepted."""
    files: list[scu.OutgoingFile] = []
    skipped = 0
    for path in iter_files(paths):
        try:
            files.append(scu.describe_file(path))
        except (InvalidDicomError, OSError, EOFError, ValueError):
            skipped += 1
            log.warning("%s: not a DICOM Part 10 file, skipped", path)
    if not files:
        print("dicomnode: no DICOM files to send", file=sys.stderr)
        return 1
    refused: list[str] = []
    peer = scu.Peer(host, port, called_ae, calling_ae, timeout)
    with tqdm(total=len(files), unit="file", desc=f"to {called_ae}@{host}:{port}",
              disable=None) as bar:

        def on_sent(_i: int) -> None:
            bar.update(1)

        def on_refused(i: int, reason: str) -> None:
            refused.append(f"{files[i].path}: {reason}")
            bar.update(1)

        try:
            scu.send_files(peer, files, on_sent, on_refused)
        except DeliveryError as exc:
            print(f"dicomnode: error: {exc}", file=sys.stderr)
            return 1
    for line in refused:
        print(f"refused: {line}", file=sys.stderr)
    sent = len(files) - len(refused)
    print(f"sent {sent} of {len(files)} file(s)" + (f", skipped {skipped} non-DICOM" if skipped else ""))
    return 0 if not refused else 1
