"""Series completion: deciding when a series has stopped arriving.

DICOM has no "end of series" message, so the node completes a series on the first of
these signals, all read from the index and so surviving a restart:

1. quiescence: no new instance for `series.stable_seconds`;
2. release: the association that sent the last instance was released, and no
   instance arrived for `series.release_grace_seconds` since (a scanner that sends a
   series per association is done when it releases; the grace covers a sender that
   opens a new association for the rest);
3. expected count: every instance carries the same Acquisition Number and Images in
   Acquisition, and that many instances have arrived.

An instance arriving after completion reopens the series; it completes again and its
new instances are routed then (instances already queued are not sent twice).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dicomnode.config import SeriesConfig
from dicomnode.telemetry import Telemetry
from dicomnode.worker import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesState:
    series_uid: str
    instance_count: int
    last_received: float
    released_at: float | None
    expected_count: int | None


def completion_reason(
    s: SeriesState, now: float, config: SeriesConfig, expected_consistent: bool
) -> str | None:
    """Why `s` counts as complete at `now`, or None while it may still grow."""
    quiet = now - s.last_received
    if quiet >= config.stable_seconds:
        return f"no new instance for {config.stable_seconds:g} s"
    if (
        config.release_grace_seconds > 0
        and s.released_at is not None
        and s.released_at >= s.last_received
        and quiet >= config.release_grace_seconds
    ):
        return "sender released the association"
    if expected_consistent and s.expected_count and s.instance_count >= s.expected_count:
        return f"all {s.expected_count} images in acquisition received"
    return None


def _expected_consistent(conn: sqlite3.Connection, s: SeriesState) -> bool:
    if not s.expected_count or s.instance_count < s.expected_count:
        return False
    row = conn.execute(
        "SELECT count(DISTINCT coalesce(acquisition_number, -1)),"
        " count(DISTINCT coalesce(images_in_acquisition, -1))"
        " FROM instances WHERE series_uid = ?",
        (s.series_uid,),
    ).fetchone()
    return bool(row[0] == 1 and row[1] == 1)


def complete_ready(conn: sqlite3.Connection, config: SeriesConfig, now: float) -> list[str]:
    """Mark every series that has become complete; returns their UIDs."""
    rows = conn.execute(
        "SELECT series_uid, instance_count, last_received, released_at, expected_count"
        " FROM series WHERE state = 'receiving'"
    ).fetchall()
    done: list[tuple[str, str]] = []
    for row in rows:
        s = SeriesState(*row)
        reason = completion_reason(s, now, config, _expected_consistent(conn, s))
        if reason:
            done.append((s.series_uid, reason))
    if not done:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        completed = []
        for uid, reason in done:
            # The state check keeps an instance that arrived meanwhile from being skipped.
            cur = conn.execute(
                "UPDATE series SET state = 'complete', completed_at = ?, completion_reason = ?,"
                " completions = completions + 1"
                " WHERE series_uid = ? AND state = 'receiving' AND last_received <= ?",
                (now, reason, uid, now),
            )
            if cur.rowcount:
                completed.append(uid)
                log.info("series %s complete: %s", uid, reason)
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return completed


def series_awaiting_routing(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT series_uid FROM series WHERE state = 'complete' ORDER BY completed_at"
    )]


class SeriesMonitor(Worker):
    """A thread that completes series and hands each complete one to `route` (once)."""

    def __init__(self, db_path: Path, config: SeriesConfig, route: Callable[[str], object],
                 clock: Callable[[], float], telemetry: Telemetry | None = None) -> None:
        super().__init__(db_path, "series-monitor")
        self._telemetry = telemetry
        self._config = config
        self._route = route
        self._clock = clock

    def step(self, conn: sqlite3.Connection) -> float:
        self.run_once(conn)
        return self._config.poll_seconds

    def run_once(self, conn: sqlite3.Connection) -> None:
        completed = complete_ready(conn, self._config, self._clock())
        if self._telemetry is not None and completed:
            self._telemetry.series_completed.inc(len(completed))
        for uid in series_awaiting_routing(conn):
            if self.stopping:
                return
            try:
                self._route(uid)
            except Exception:
                # Left 'complete': retried on the next pass rather than lost.
                log.exception("routing series %s failed; will retry", uid)
