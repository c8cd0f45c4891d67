"""The running node: builds every part from the configuration, starts them, stops them in order."""

from __future__ import annotations

import logging
import signal
import threading
import time
from io import BytesIO
from pathlib import Path
from types import FrameType
from typing import Any

from pydicom import dcmread

from dicomnode.config import Config
from dicomnode.delivery import DeliveryWorker
from dicomnode.dispatch import Router
from dicomnode.engines import EngineRegistry
from dicomnode.generators import Generator
from dicomnode.generators.anomaly_triage import AnomalyTriage
from dicomnode.jobs import JobWorker
from dicomnode.net.policy import PeerPolicy
from dicomnode.net.scp import StoreSCP
from dicomnode.results import ResultRecorder
from dicomnode.rules import load_rules
from dicomnode.series import SeriesMonitor
from dicomnode.store import outbox
from dicomnode.store.db import connect, initialise
from dicomnode.store.index import Index, InstanceRecord, int_attribute
from dicomnode.store.retention import Retention
from dicomnode.store.spool import Spool
from dicomnode.telemetry import Telemetry
from dicomnode.worklist.hl7 import Hl7Notifier
from dicomnode.worklist.hl7_queue import Hl7Queue
from dicomnode.worklist.store import WorklistStore
from dicomnode.worklist.web import WebServer, create_app

log = logging.getLogger(__name__)


class Node:
    """One DICOM node. Construction validates everything; `start` opens the port."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules = load_rules(config.rules, config.destinations)
        data_dir = config.node.data_dir
        self.db_path = data_dir / "index.sqlite3"
        initialise(self.db_path)
        self.spool = Spool(data_dir / "spool", config.node.min_free_mb * 2**20)
        self.telemetry = Telemetry()
        self.engines = EngineRegistry(config.engines, data_dir)
        self.generators: dict[str, Generator] = {
            "anomaly_triage": AnomalyTriage(self.engines, config.anomaly_triage),
        }
        self.worklist = WorklistStore(self.db_path)
        self._index: Index | None = None
        self._scp: StoreSCP | None = None
        self._monitor: SeriesMonitor | None = None
        self._jobs: JobWorker | None = None
        self._hl7: Hl7Queue | None = None
        self._web: WebServer | None = None
        self._retention: Retention | None = None
        self._workers: dict[str, DeliveryWorker] = {}
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        assert self._scp is not None
        return self._scp.port

    @property
    def web_port(self) -> int:
        assert self._web is not None
        return self._web.port

    def start(self) -> None:
        cfg = self.config
        removed = self.spool.clean_temporary()
        if removed:
            log.info("removed %d partial file(s) left by an interrupted write", removed)
        self._index = Index(self.db_path)
        self._reconcile(self._index)
        self._fail_orphaned_deliveries()
        if cfg.node.retention_days is not None:
            self._retention = Retention(self.db_path, self._index, cfg.node.data_dir, cfg.node.retention_days,
                                        self.spool.min_free_bytes, self.telemetry)
            self.spool.on_full = self._retention.wake
            self._retention.start()
        for name, dest in cfg.destinations.items():
            worker = DeliveryWorker(self.db_path, name, dest, cfg.node.ae_title, cfg.outbox, self.telemetry)
            self._workers[name] = worker
            worker.start()
        if cfg.worklist.hl7 is not None:
            notifier = Hl7Notifier(cfg.worklist.hl7, sending_application=cfg.node.ae_title)
            self._hl7 = Hl7Queue(self.db_path, self.worklist, notifier, cfg.outbox)
            self._hl7.start()
        self.engines.start()
        recorder = ResultRecorder(self.worklist, self.telemetry, self.engines.backend.name, self._hl7)
        self._jobs = JobWorker(self.db_path, Spool(cfg.node.data_dir / "results", self.spool.min_free_bytes),
                               self.generators, cfg.destinations, self._wake, recorder)
        self._jobs.start()
        router = Router(connect(self.db_path), self.rules, cfg.destinations, self._wake, self._jobs.wake,
                        self.telemetry)
        self._monitor = SeriesMonitor(self.db_path, cfg.series, router.route, time.time, self.telemetry)
        self._monitor.start()
        self._scp = StoreSCP(cfg.node, self.spool, self._index, PeerPolicy(cfg.node.allowed_peers),
                             self.telemetry)
        self._scp.start()
        app = create_app(self.worklist, token=cfg.web.token, viewer_url=cfg.worklist.viewer_url,
                         health=self.health, metrics=self.telemetry)
        self._web = WebServer(app, cfg.web.host, cfg.web.port)
        self._web.start()
        log.info("node started: %d rule(s) from %s, destinations: %s, web on %s", len(self.rules),
                 cfg.rules, ", ".join(cfg.destinations) or "none", self._web.url)

    def health(self) -> dict[str, Any]:
        conn = connect(self.db_path)
        try:
            backlog = outbox.backlog(conn)
        finally:
            conn.close()
        listening = self._scp is not None and self._scp.listening
        return {
            "healthy": listening,
            "dicom_listener": listening,
            "engines_loaded": sorted(self.engines.loaded()),
            "outbox_backlog": backlog,
        }

    def stop(self) -> None:
        """Stop in flow order: no new associations, finish stores, then routing, jobs and sends."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._scp is not None:
            self._scp.stop()
        if self._monitor is not None:
            self._monitor.stop()
        if self._jobs is not None:
            self._jobs.stop()
        self.engines.close()
        for worker in self._workers.values():
            worker.stop()
        if self._hl7 is not None:
            self._hl7.stop()
        if self._web is not None:
            self._web.stop()
        if self._retention is not None:
            self._retention.stop()
        if self._index is not None:
            self._index.close()
        log.info("node stopped; pending work resumes on the next start")

    def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then stop cleanly."""
        stop_requested = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            stop_requested.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            stop_requested.wait()
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _wake(self, destination: str) -> None:
        worker = self._workers.get(destination)
        if worker is not None:
            worker.wake()

    def _reconcile(self, index: Index) -> None:
        """Index spool files whose index row was lost (possible only after a power loss)."""
        known = index.known_paths()
        missing = [p for p in self.spool.iter_files() if str(p) not in known]
        for path in missing:
            try:
                record = _record_from_file(path)
            except Exception as exc:
                log.error("spool file %s cannot be read back: %s", path, exc)
                continue
            index.add(record)
        if missing:
            log.warning("re-indexed %d spooled instance(s) missing from the index", len(missing))

    def _fail_orphaned_deliveries(self) -> None:
        conn = connect(self.db_path)
        try:
            for name in outbox.backlog(conn):
                if name not in self.config.destinations:
                    conn.execute(
                        "UPDATE outbox SET state = 'failed', last_error = ?, finished_at = ?"
                        " WHERE destination = ? AND state = 'pending'",
                        (f"destination {name!r} is no longer configured", time.time(), name),
                    )
                    log.error("pending deliveries to %r failed: destination no longer configured",
                              name)
        finally:
            conn.close()


def _record_from_file(path: Path) -> InstanceRecord:
    data = path.read_bytes()
    ds = dcmread(BytesIO(data), stop_before_pixels=True)

    return InstanceRecord(
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        sop_class_uid=str(ds.file_meta.MediaStorageSOPClassUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        instance_number=int_attribute(ds, "InstanceNumber"),
        acquisition_number=int_attribute(ds, "AcquisitionNumber"),
        images_in_acquisition=int_attribute(ds, "ImagesInAcquisition"),
        path=str(path),
        size=len(data),
        received_at=path.stat().st_mtime,
        calling_ae="",
        peer_host="",
    )
