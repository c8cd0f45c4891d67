"""Delivery workers: one thread per destination drains its part of the outbox, in order.

A destination that is down or out of resources is retried with exponential back-off
(outbox.retry_start_seconds doubling up to outbox.retry_max_seconds); a permanent
refusal is recorded with its reason and not retried.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from pydicom.errors import InvalidDicomError

from dicomnode.config import Destination, OutboxConfig
from dicomnode.errors import DeliveryError
from dicomnode.net import scu
from dicomnode.store import outbox
from dicomnode.store.db import connect
from dicomnode.telemetry import Telemetry

log = logging.getLogger(__name__)

_IDLE_WAIT = 5.0


class _Interrupted(Exception):
    """The node is stopping; the delivery stays pending and resumes after restart."""


def backoff(attempts: int, config: OutboxConfig) -> float:
    """Seconds to wait after the `attempts`-th failed try (1-based)."""
    return float(min(config.retry_start_seconds * 2 ** max(attempts - 1, 0),
                     config.retry_max_seconds))


class DeliveryWorker:
    def __init__(self, db_path: Path, name: str, destination: Destination, calling_ae: str,
                 config: OutboxConfig, telemetry: Telemetry | None = None) -> None:
        self.name = name
        self._telemetry = telemetry
        self._db_path = db_path
        self._peer = scu.Peer(destination.host, destination.port, destination.ae_title,
                              destination.calling_ae_title or calling_ae, config.timeout_seconds)
        self._config = config
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"deliver-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn = connect(self._db_path)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    if self._telemetry is not None:
                        pending = outbox.backlog(conn).get(self.name, 0)
                        self._telemetry.outbox_pending.labels(destination=self.name).set(pending)
                    due = outbox.next_due(conn, self.name, time.time())
                    if due is not None:
                        self._deliver(conn, due)
                        continue
                    wake_at = outbox.next_wake(conn, self.name)
                except _Interrupted:
                    return
                except Exception:
                    log.exception("delivery worker for %s failed; retrying", self.name)
                    wake_at = None
                wait = _IDLE_WAIT if wake_at is None else min(max(wake_at - time.time(), 0.0),
                                                               _IDLE_WAIT)
                self._wake.wait(wait)
        finally:
            conn.close()

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
            if self._stop.is_set():
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
