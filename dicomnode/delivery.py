"""Delivery workers: one thread per destination drains its part of the outbox, in order.

A destination that is down or out of resources is retried with exponential back-off
(outbox.retry_start_seconds doubling up to outbox.retry_max_seconds); a permanent
refusal is recorded with its reason and not retried.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from pathlib import Path

from pydicom.errors import InvalidDicomError

from dicomnode.config import Destination, OutboxConfig
from dicomnode.errors import DeliveryError
from dicomnode.net import scu
from dicomnode.store import outbox
from dicomnode.telemetry import Telemetry
from dicomnode.worker import Worker

log = logging.getLogger(__name__)

_IDLE_WAIT = 5.0


class _Interrupted(Exception):
    """The node is stopping; the delivery stays pending and resumes after restart."""


def backoff(attempts: int, config: OutboxConfig) -> float:
    """Seconds to wait after the `attempts`-th failed try (1-based)."""
    return float(min(config.retry_start_seconds * 2 ** max(attempts - 1, 0),
                     config.retry_max_seconds))


class DeliveryWorker(Worker):
    def __init__(self, db_path: Path, name: str, destination: Destination, calling_ae: str,
                 config: OutboxConfig, telemetry: Telemetry | None = None) -> None:
        super().__init__(db_path, f"deliver-{name}")
        self.name = name
        self._telemetry = telemetry
        self._peer = scu.Peer(destination.host, destination.port, destination.ae_title,
                              destination.calling_ae_title or calling_ae, config.timeout_seconds)
        self._config = config

    def step(self, conn: sqlite3.Connection) -> float:
        if self._telemetry is not None:
            pending = outbox.backlog(conn).get(self.name, 0)
            self._telemetry.outbox_pending.labels(destination=self.name).set(pending)
        due = outbox.next_due(conn, self.name, time.time())
        if due is not None:
            with contextlib.suppress(_Interrupted):  # stopping: the rest waits for the next start
                self._deliver(conn, due)
            return 0.0
        wake_at = outbox.next_wake(conn, self.name)
        return _IDLE_WAIT if wake_at is None else min(max(wake_at - time.time(), 0.0), _IDLE_WAIT)

    def _deliver(self, conn: sqlite3.Connection, due: outbox.Delivery) -> None:
        items = outbox.pending_items(conn, due.id)
        files: list[scu.OutgoingFile] = []
        sendable: list[outbox.DeliveryItem] = []
        for item in items:
            try:
                files.append(scu.describe_file(Path(item.path)))
                sendable.append(item)
            except (OSError, InvalidDicomError) as exc:
                outbox.mark_item(conn, due.id, item.seq, "refused", f"unreadable: {exc}")

        sent = 0

        def on_sent(i: int) -> None:
            nonlocal sent
            sent += 1
            outbox.mark_item(conn, due.id, sendable[i].seq, "sent")
            if self.stopping:
                raise _Interrupted

        def on_refused(i: int, reason: str) -> None:
            outbox.mark_item(conn, due.id, sendable[i].seq, "refused", reason)
            log.warning("%s refused instance %d of series %s: %s", self.name, sendable[i].seq + 1,
                        due.series_uid, reason)

        try:
            scu.send_files(self._peer, files, on_sent, on_refused)
        except DeliveryError as exc:
            now = time.time()
            if self._telemetry is not None:
                self._telemetry.delivery_failures.labels(destination=self.name).inc()
            if exc.permanent:
                outbox.fail_delivery(conn, due.id, str(exc), now)
                log.error("delivery of series %s to %s failed for good: %s", due.series_uid,
                          self.name, exc)
                return
            delay = backoff(due.attempts + 1, self._config)
            outbox.reschedule(conn, due.id, str(exc), now + delay)
            log.warning("delivery of series %s to %s failed (try %d): %s; retrying in %.0f s",
                        due.series_uid, self.name, due.attempts + 1, exc, delay)
            return
        state = outbox.finish_delivery(conn, due.id, time.time())
        if state == "delivered":
            log.info("delivered series %s to %s (%d instances)", due.series_uid, self.name, sent)
        else:
            log.error("delivered series %s to %s with refusals (see outbox %d)", due.series_uid,
                      self.name, due.id)
