"""Retention: received series and their results are the node's working copies, not an archive.

A series is purged (its spool files, its result files and their index rows) once all its work
is finished and handed on (every job done, every delivery delivered, the results included) and
nothing has happened to it for `node.retention_days`. While the disk is below twice
`node.min_free_mb`, finished series go oldest first whatever their age, so the listener does
not have to refuse new instances (0xA700) while the disk holds work that is already done.
A series with a failed or pending job or delivery is never purged: nothing the node has not
handed on is lost. Quarantined datasets (refused instances kept for the administrator) go
after `retention_days` too.

Files are unlinked inside the index transaction that deletes their rows, on the index's one
writer thread: a C-STORE of the same instance either finds the row (and the file) or neither,
and a crash in between leaves rows without files, never files without rows (which start-up
would index again and route a second time). A purge that was interrupted is finished on the
next pass: the series is still finished and still old.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dicomnode.store.db import connect
from dicomnode.store.index import Index
from dicomnode.telemetry import Telemetry
from dicomnode.worker import Worker

log = logging.getLogger(__name__)

# A series' last activity: its last instance, its last job or delivery finishing.
_FINISHED_SERIES = """
SELECT s.series_uid,
       max(s.last_received,
           coalesce((SELECT max(j.updated_at) FROM jobs j WHERE j.series_uid = s.series_uid), 0),
           coalesce((SELECT max(o.finished_at) FROM outbox o WHERE o.series_uid = s.series_uid), 0))
       AS last_activity
FROM series s
WHERE s.state = 'routed'
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid = s.series_uid AND j.state != 'done')
  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.series_uid = s.series_uid AND o.state != 'delivered')
"""


@dataclass(frozen=True)
class PurgeReport:
    series: int = 0
    files: int = 0
    bytes: int = 0
    quarantined: int = 0


class Retention(Worker):
    """Purges finished series on a background thread, at start and then every minute (or a tenth of
    the retention, when shorter), and at once when woken (the listener found the disk short)."""

    def __init__(self, db_path: Path, index: Index, data_dir: Path, retention_days: float,
                 min_free_bytes: int, telemetry: Telemetry | None = None,
                 free_bytes: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free) -> None:
        super().__init__(db_path, "retention")
        self._index = index
        self._data_dir = data_dir.resolve()
        self._retention_seconds = retention_days * 86400.0
        self._comfortable_bytes = 2 * min_free_bytes
        # A tenth of the retention, so nothing outstays it by more; at most a minute between passes.
        self._interval = min(60.0, self._retention_seconds / 10.0)
        self._free_bytes = free_bytes
        self._telemetry = telemetry

    def step(self, conn: sqlite3.Connection) -> float:
        self.run_once(time.time(), conn)
        return self._interval

    def run_once(self, now: float, conn: sqlite3.Connection | None = None) -> PurgeReport:
        """One pass: series past retention, then oldest finished ones while the disk is short."""
        reader = conn or connect(self._db_path)
        try:
            finished = reader.execute(_FINISHED_SERIES + " ORDER BY last_activity").fetchall()
        finally:
            if conn is None:
                reader.close()
        cutoff = now - self._retention_seconds
        series = files = size = 0
        short_warned = False
        for row in finished:
            old = row["last_activity"] < cutoff
            if not old:
                if self._free_bytes(self._data_dir) >= self._comfortable_bytes:
                    break  # the rest are younger still
                if not short_warned:
                    log.warning("less than %d MiB free under %s: purging finished series before their "
                                "retention ends", self._comfortable_bytes // 2**20, self._data_dir)
                    short_warned = True
            purged = self._purge(row["series_uid"], cutoff if old else float("inf"))
            if purged is not None:
                series += 1
                files += purged[0]
                size += purged[1]
        quarantined = self._purge_quarantine(cutoff)
        report = PurgeReport(series, files, size, quarantined)
        if self._telemetry is not None:
            self._telemetry.series_purged.inc(series)
            self._telemetry.disk_free_bytes.set(self._free_bytes(self._data_dir))
        if series or quarantined:
            log.info("retention: purged %d finished series (%d files, %.1f MiB) and %d quarantined "
                     "dataset(s)", series, files, size / 2**20, quarantined)
        return report

    def _purge(self, series_uid: str, active_before: float) -> tuple[int, int] | None:
        """Purge one series if it is still finished (and idle since `active_before`)."""
        def purge(conn: sqlite3.Connection) -> tuple[int, int] | None:
            row = conn.execute(_FINISHED_SERIES + " AND s.series_uid = ?", (series_uid,)).fetchone()
            if row is None or row["last_activity"] >= active_before:
                return None  # an instance arrived, or work was queued, since the pass began
            paths = [r[0] for r in conn.execute(
                "SELECT path FROM instances WHERE series_uid = ? UNION "
                "SELECT i.path FROM outbox_items i JOIN outbox o ON o.id = i.outbox_id "
                "WHERE o.series_uid = ?", (series_uid, series_uid))]
            removed = self._unlink(paths)
            conn.execute("DELETE FROM outbox_items WHERE outbox_id IN "
                         "(SELECT id FROM outbox WHERE series_uid = ?)", (series_uid,))
            conn.execute("DELETE FROM instances WHERE series_uid = ?", (series_uid,))
            conn.execute("DELETE FROM series WHERE series_uid = ?", (series_uid,))
            return removed

        result = self._index.write(purge)
        return result if isinstance(result, tuple) else None

    def _unlink(self, paths: list[str]) -> tuple[int, int]:
        count = size = 0
        folders: set[Path] = set()
        for text in paths:
            path = Path(text).resolve()
            if not path.is_relative_to(self._data_dir):
                log.error("not purging %s: it lies outside %s", path, self._data_dir)
                continue
            try:
                size += path.stat().st_size
                path.unlink()
                count += 1
            except FileNotFoundError:
                pass  # removed by a purge that was interrupted before its rows went
            folders.add(path.parent)
        for folder in folders:
            # Not empty: the series is arriving again, and its new instances stay.
            with contextlib.suppress(OSError):
                folder.rmdir()
        return count, size

    def _purge_quarantine(self, cutoff: float) -> int:
        removed = 0
        for path in (self._data_dir / "quarantine").glob("*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += path.suffix == ".dcm"
            except FileNotFoundError:
                pass
        return removed
