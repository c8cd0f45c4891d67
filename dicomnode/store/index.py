"""The instance and series index: one writer thread that commits in groups.

C-STORE handlers hand their row to the writer and wait for its commit before answering
success. Rows that arrive while a commit is running go into the next transaction
together, so parallel associations share commits instead of queueing on the lock.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from pydicom import Dataset

from dicomnode.store.db import connect

log = logging.getLogger(__name__)

_MAX_BATCH = 512


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    instance_number: int | None
    acquisition_number: int | None
    images_in_acquisition: int | None
    path: str
    size: int
    received_at: float
    calling_ae: str
    peer_host: str


def int_attribute(ds: Dataset, keyword: str) -> int | None:
    """An IS/US attribute as int; None when absent or malformed (it must not block storage)."""
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (ValueError, TypeError):
        return None


_COLUMNS = ", ".join(f.name for f in fields(InstanceRecord))
_PLACEHOLDERS = ", ".join("?" for _ in fields(InstanceRecord))

_Op = Callable[[sqlite3.Connection], object]


class Index:
    """Writes go through one thread; reads use a connection per calling thread."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._queue: queue.Queue[tuple[_Op, Future[object]] | None] = queue.Queue()
        self._local = threading.local()
        self._writer = threading.Thread(target=self._run_writer, name="index-writer", daemon=True)
        self._writer.start()

    # -- reads -------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._db_path)
            self._local.conn = conn
        return conn

    def contains(self, sop_instance_uid: str) -> bool:
        row = self._reader().execute(
            "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
        ).fetchone()
        return row is not None

    def known_paths(self) -> set[str]:
        return {r[0] for r in self._reader().execute("SELECT path FROM instances")}

    # -- writes ------------------------------------------------------------------------

    def add(self, record: InstanceRecord) -> bool:
        """Record a durable instance; True when it is new. Blocks until committed."""
        result = self._submit(lambda conn: _insert_instance(conn, record)).result()
        return bool(result)

    def mark_released(self, series_uids: Iterable[str], at: float) -> None:
        """Note that the association that sent these series was released (not awaited)."""
        uids = list(series_uids)
        if uids:
            self._submit(lambda conn: _mark_released(conn, uids, at))

    def write(self, op: _Op) -> object:
        """Run `op` in a write transaction on the writer thread; its result once committed.

        Ops are serialised with every `add`, so an op sees no instance half-recorded.
        """
        return self._submit(op).result()

    def _submit(self, op: _Op) -> Future[object]:
        future: Future[object] = Future()
        self._queue.put((op, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join()

    def _run_writer(self) -> None:
        conn = connect(self._db_path)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                _commit_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()


def _commit_batch(conn: sqlite3.Connection, batch: list[tuple[_Op, Future[object]]]) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = [op(conn) for op, _ in batch]
        conn.execute("COMMIT")
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if len(batch) > 1:  # isolate the failing row so the others still commit
            for item in batch:
                _commit_batch(conn, [item])
            return
        log.exception("index write failed")
        batch[0][1].set_exception(RuntimeError("index write failed"))
        return
    for (_, future), result in zip(batch, results, strict=True):
        future.set_result(result)


def _insert_instance(conn: sqlite3.Connection, r: InstanceRecord) -> bool:
    cur = conn.execute(
        f"INSERT OR IGNORE INTO instances ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", astuple(r)
    )
    if cur.rowcount == 0:
        return False
    conn.execute(
        """
        INSERT INTO series (series_uid, study_uid, state, instance_count, first_received,
                            last_received, expected_count, calling_ae, peer_host)
        VALUES (?, ?, 'receiving', 1, ?, ?, ?, ?, ?)
        ON CONFLICT (series_uid) DO UPDATE SET
            instance_count = instance_count + 1,
            last_received = max(last_received, excluded.last_received),
            state = 'receiving',
            calling_ae = excluded.calling_ae,
            peer_host = excluded.peer_host
        """,
        (r.series_uid, r.study_uid, r.received_at, r.received_at, r.images_in_acquisition,
         r.calling_ae, r.peer_host),
    )
    return True


def _mark_released(conn: sqlite3.Connection, series_uids: list[str], at: float) -> None:
    conn.executemany(
        "UPDATE series SET released_at = ? WHERE series_uid = ? AND state = 'receiving'",
        [(at, uid) for uid in series_uids],
    )
