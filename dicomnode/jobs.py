"""The job worker: runs queued generator jobs, stores their results durably, queues delivery.

One job at a time (the engines serialise GPU use anyway, and a 2-core node must keep its
listener responsive). A job is claimed ('running'), its results are written and fsync'd
under <data_dir>/results, and in one transaction the job becomes 'done' and its results
enter the outbox. A job found 'running' at start-up was interrupted and runs again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite

from dicomnode.generators import Generator, GeneratorOutput, SeriesRejected
from dicomnode.store import outbox
from dicomnode.store.db import connect
from dicomnode.store.spool import Spool
from dicomnode.worker import Worker

log = logging.getLogger(__name__)

_IDLE_WAIT = 5.0


@dataclass(frozen=True)
class Job:
    id: int
    series_uid: str
    rule: str
    generator: str
    params: dict[str, Any]
    send_to: list[str]
    created_at: float
    arrived_at: float  # the series' first instance


class JobObserver(Protocol):
    """Told when a job starts and how it ended (the worklist and metrics listen here)."""

    def started(self, job: Job, datasets: Sequence[Dataset]) -> None: ...

    def finished(self, job: Job, datasets: Sequence[Dataset], output: GeneratorOutput | None,
                 error: str | None, seconds: float) -> None: ...


class JobWorker(Worker):
    def __init__(self, db_path: Path, results: Spool, generators: Mapping[str, Generator],
                 destinations: Collection[str], wake_delivery: Callable[[str], None],
                 observer: JobObserver | None = None) -> None:
        super().__init__(db_path, "jobs")
        self._destinations = set(destinations)
        self._results = results
        self._generators = generators
        self._wake_delivery = wake_delivery
        self._observer = observer

    def start(self) -> None:
        conn = connect(self._db_path)
        try:
            cur = conn.execute("UPDATE jobs SET state = 'pending' WHERE state = 'running'")
            if cur.rowcount:
                log.warning("%d job(s) interrupted by the last stop will run again", cur.rowcount)
            waiting = conn.execute(
                "SELECT generator, count(*) FROM jobs WHERE state = 'pending' GROUP BY generator"
            ).fetchall()
        finally:
            conn.close()
        for name, count in waiting:
            if name not in self._generators:
                log.warning("%d job(s) wait for generator %s, which this node cannot run", count, name)
        super().start()

    def step(self, conn: sqlite3.Connection) -> float:
        job = self._claim(conn)
        if job is None:
            return _IDLE_WAIT
        self._process(conn, job)
        return 0.0

    def _claim(self, conn: sqlite3.Connection) -> Job | None:
        names = list(self._generators)
        if not names:
            return None
        marks = ", ".join("?" for _ in names)
        row = conn.execute(
            "SELECT j.id, j.series_uid, j.rule, j.generator, j.params, j.send_to, j.created_at,"
            " coalesce(s.first_received, j.created_at) FROM jobs j"
            " LEFT JOIN series s ON s.series_uid = j.series_uid"
            f" WHERE j.state = 'pending' AND j.generator IN ({marks}) ORDER BY j.id LIMIT 1",
            names,
        ).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE jobs SET state = 'running', updated_at = ? WHERE id = ?", (time.time(), row[0]))
        return Job(row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]), row[6], row[7])

    def _process(self, conn: sqlite3.Connection, job: Job) -> None:
        started = time.monotonic()
        datasets: list[Dataset] = []
        try:
            paths = [r[0] for r in conn.execute(
                "SELECT path FROM instances WHERE series_uid = ?"
                " ORDER BY instance_number IS NULL, instance_number, sop_instance_uid", (job.series_uid,))]
            datasets = [dcmread(p) for p in paths]
            self._tell("started", job, datasets)
            output = self._generators[job.generator].run(datasets, job.params)
            seconds = time.monotonic() - started
            stored = [self._store(ds) for ds in output.objects]
        except SeriesRejected as exc:
            self._fail(conn, job, datasets, f"series rejected: {exc}", time.monotonic() - started)
            return
        except Exception as exc:
            log.exception("job %d (%s on series %s) failed", job.id, job.generator, job.series_uid)
            self._fail(conn, job, datasets, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
            return
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for destination in job.send_to:
                if destination in self._destinations:
                    outbox.enqueue_delivery(conn, destination, job.series_uid, job.rule, stored, now)
                else:
                    outbox.record_undeliverable(conn, destination, job.series_uid, job.rule,
                                                f"no configured destination {destination!r}", now)
            conn.execute("UPDATE jobs SET state = 'done', updated_at = ?, error = NULL WHERE id = ?",
                         (now, job.id))
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        log.info("job %d: %s on series %s produced %d object(s) in %.1f s", job.id, job.generator,
                 job.series_uid, len(stored), time.monotonic() - started)
        for destination in job.send_to:
            self._wake_delivery(destination)
        self._tell("finished", job, datasets, output, None, seconds)

    def _store(self, ds: Any) -> tuple[str, str]:
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        path = self._results.path_for(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        self._results.write(path, buffer.getvalue())
        return str(ds.SOPInstanceUID), str(path)

    def _fail(self, conn: sqlite3.Connection, job: Job, datasets: list[Dataset], reason: str,
              seconds: float) -> None:
        conn.execute("UPDATE jobs SET state = 'failed', updated_at = ?, error = ? WHERE id = ?",
                     (time.time(), reason, job.id))
        log.error("job %d (%s on series %s) failed: %s", job.id, job.generator, job.series_uid, reason)
        self._tell("finished", job, datasets, None, reason, seconds)

    def _tell(self, event: str, *args: Any) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, event)(*args)
        except Exception:  # the worklist must not be able to lose a result that is already stored
            log.exception("the %s hook of job %d failed", event, args[0].id)
