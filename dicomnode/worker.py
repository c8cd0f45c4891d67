"""A background thread with its own database connection, woken early when there is work.

The delivery workers, the job worker, the series monitor, the HL7 queue and retention are all this:
loop over `step()`, sleep for as long as it says unless woken, stop when asked.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from dicomnode.store.db import connect

log = logging.getLogger(__name__)

_AFTER_ERROR = 5.0


class Worker:
    def __init__(self, db_path: Path, name: str) -> None:
        self._db_path = db_path
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def step(self, conn: sqlite3.Connection) -> float:
        """Do one unit of work; return how long to sleep (0: go again at once)."""
        raise NotImplementedError

    def _run(self) -> None:
        conn = connect(self._db_path)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    wait = self.step(conn)
                except Exception:
                    log.exception("%s failed; retrying in %.0f s", self._thread.name, _AFTER_ERROR)
                    wait = _AFTER_ERROR
                if wait > 0:
                    self._wake.wait(wait)
        finally:
            conn.close()
