"""Durable instance files: write to a temporary file, fsync, link into place, fsync the folder.

File names are hashes of the UIDs, never the UIDs themselves: a UID from the network
may hold anything, and a hash cannot escape the spool or collide with another name.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from dicomnode.errors import StorageFullError

log = logging.getLogger(__name__)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def uid_hash(uid: str) -> str:
    return hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class Spool:
    """The folder of received instances, one sub-folder per series."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.quarantine = root.parent / "quarantine"
        self.min_free_bytes = min_free_bytes
        self._free_checked_at = 0.0
        self._free_ok = True
        # Called (at most once a second) while the disk is below the floor: retention makes room.
        self.on_full: Callable[[], None] | None = None
        for folder in (self.root, self.tmp, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, series_uid: str, sop_instance_uid: str) -> Path:
        return self.root / uid_hash(series_uid) / f"{uid_hash(sop_instance_uid)}.dcm"

    def check_space(self) -> None:
        """Raise StorageFullError when the disk is below the free-space floor (checked ≤ 1/s)."""
        now = time.monotonic()
        if now - self._free_checked_at >= 1.0:
            self._free_ok = shutil.disk_usage(self.root).free >= self.min_free_bytes
            self._free_checked_at = now
            if not self._free_ok and self.on_full is not None:
                self.on_full()
        if not self._free_ok:
            raise StorageFullError(f"less than {self.min_free_bytes // 2**20} MiB free in {self.root}")

    def write(self, final: Path, data: bytes) -> bool:
        """Durably store `data` at `final`; False when a file is already there (kept as is)."""
        if not final.parent.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                self._link(tmp, final)
            except FileExistsError:
                return False
            _fsync_dir(final.parent)
            return True
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                self._free_ok = False
                self._free_checked_at = time.monotonic()
                raise StorageFullError(f"cannot write to {self.root}: {exc.strerror}") from exc
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def _link(self, tmp: Path, final: Path) -> None:
        """Link into place; unlike rename, never replaces an existing file."""
        try:
            os.link(tmp, final)
        except FileNotFoundError:  # retention removed the emptied series folder meanwhile
            final.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)
            os.link(tmp, final)

    def quarantine_bytes(self, data: bytes, reason: str) -> Path | None:
        """Keep a rejected dataset for the administrator, with the reason beside it."""
        stem = self.quarantine / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        try:
            stem.with_suffix(".dcm").write_bytes(data)
            stem.with_suffix(".txt").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            log.error("could not quarantine a rejected dataset: %s", exc.strerror)
            return None
        return stem.with_suffix(".dcm")

    def clean_temporary(self) -> int:
        """Remove partial files left by a crash; they were never acknowledged."""
        removed = 0
        for part in self.tmp.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def iter_files(self) -> list[Path]:
        return [p for p in self.root.glob("*/*.dcm")]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
