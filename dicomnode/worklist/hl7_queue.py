"""Durable HL7 notifications: a critical or urgent study is told to the RIS until the RIS takes it.

A row per study waits in `hl7_outbox`; a thread sends due rows through `Hl7Notifier` with the
outbox's exponential back-off. The message is built when it is sent, from the worklist entry
as it is then, so a retry carries the latest category and score.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from dicomnode.config import OutboxConfig
from dicomnode.delivery import backoff
from dicomnode.store.db import connect
from dicomnode.worker import Worker
from dicomnode.worklist.hl7 import Hl7DeliveryError, Hl7Notifier
from dicomnode.worklist.store import WorklistStore

log = logging.getLogger(__name__)

_IDLE_WAIT = 5.0


class Hl7Queue(Worker):
    def __init__(self, db_path: Path, store: WorklistStore, notifier: Hl7Notifier,
                 config: OutboxConfig) -> None:
        super().__init__(db_path, "hl7")
        self._store = store
        self._notifier = notifier
        self._config = config

    def enqueue(self, study_uid: str) -> None:
        conn = connect(self._db_path)
        try:
            now = time.time()
            conn.execute("INSERT INTO hl7_outbox (study_uid, state, created_at, next_attempt)"
                         " VALUES (?, 'pending', ?, ?)", (study_uid, now, now))
        finally:
            conn.close()
        self.wake()

    def step(self, conn: sqlite3.Connection) -> float:
        row = conn.execute(
            "SELECT id, study_uid, attempts FROM hl7_outbox WHERE state = 'pending'"
            " AND next_attempt <= ? ORDER BY id LIMIT 1", (time.time(),)).fetchone()
        if row is None:
            wake_at = conn.execute(
                "SELECT min(next_attempt) FROM hl7_outbox WHERE state = 'pending'").fetchone()[0]
            return _IDLE_WAIT if wake_at is None else min(max(wake_at - time.time(), 0.0), _IDLE_WAIT)
        row_id, study_uid, attempts = row
        state, error, next_attempt = self._send(study_uid, attempts + 1)
        conn.execute(
            "UPDATE hl7_outbox SET state = ?, attempts = attempts + 1, last_error = ?,"
            " next_attempt = ?, finished_at = CASE WHEN ? != 'pending' THEN ? END WHERE id = ?",
            (state, error, next_attempt, state, time.time(), row_id))
        return 0.0

    def _send(self, study_uid: str, attempt: int) -> tuple[str, str | None, float]:
        now = time.time()
        entry = self._store.get(study_uid)
        if entry is None:
            return "failed", "study is not on the worklist", now
        try:
            self._notifier.send(entry)
            return "sent", None, now
        except ValueError as exc:  # e.g. no accession number: the RIS could not match it
            log.error("HL7 message for study %s cannot be built: %s", study_uid, exc)
            return "failed", str(exc), now
        except Hl7DeliveryError as exc:
            if exc.permanent:
                log.error("RIS refused the HL7 message for study %s: %s", study_uid, exc)
                return "failed", str(exc), now
            delay = backoff(attempt, self._config)
            log.warning("HL7 message for study %s not delivered (try %d): %s; retrying in %.0f s",
                        study_uid, attempt, exc, delay)
            return "pending", str(exc), now + delay
