"""Turning a complete series into work: match the rules, queue deliveries and jobs.

Everything a series' routing produces is written in one transaction together with the
series' move to 'routed', so a crash either routes it completely or not at all (and it
is routed again after restart).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread

from dicomnode.config import Destination
from dicomnode.rules import ORIGIN, Route, Rule, match, series_attributes
from dicomnode.store import outbox
from dicomnode.telemetry import Telemetry

log = logging.getLogger(__name__)


class Router:
    def __init__(
        self,
        conn: sqlite3.Connection,
        rules: Sequence[Rule],
        destinations: Mapping[str, Destination],
        wake: Callable[[str], None],
        wake_jobs: Callable[[], None],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._conn = conn
        self._rules = rules
        self._destinations = destinations
        self._wake = wake
        self._wake_jobs = wake_jobs

    def route(self, series_uid: str) -> list[Route]:
        conn = self._conn
        series = conn.execute(
            "SELECT calling_ae, instance_count FROM series WHERE series_uid = ?", (series_uid,)
        ).fetchone()
        instances = conn.execute(
            "SELECT sop_instance_uid, path FROM instances WHERE series_uid = ?"
            " ORDER BY instance_number IS NULL, instance_number, sop_instance_uid",
            (series_uid,),
        ).fetchall()
        calling_ae = str(series["calling_ae"])
        attributes = _read_attributes([Path(r["path"]) for r in instances], calling_ae)
        routes = match(attributes, self._rules)
        now = time.time()
        woken: set[str] = set()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for route in routes:
                for name in route.forward_to:
                    dest = self._resolve(name, calling_ae)
                    if dest is None:
                        reason = f"no destination is configured for the sender's AE {calling_ae!r}"
                        outbox.record_undeliverable(conn, f"{ORIGIN}:{calling_ae}", series_uid,
                                                    route.rule, reason, now)
                        log.error("rule %s: cannot forward series %s to origin: %s",
                                  route.rule, series_uid, reason)
                        continue
                    queued = outbox.queued_instances(conn, series_uid, dest)
                    items = [(r["sop_instance_uid"], r["path"]) for r in instances
                             if r["sop_instance_uid"] not in queued]
                    if items:
                        outbox.enqueue_delivery(conn, dest, series_uid, route.rule, items, now)
                        woken.add(dest)
                if route.run is not None:
                    outbox.enqueue_job(conn, series_uid, route.rule, route.run, route.params,
                                       [self._resolve(n, calling_ae) or f"{ORIGIN}:{calling_ae}"
                                        for n in route.send_to],
                                       now)
            conn.execute("UPDATE series SET state = 'routed' WHERE series_uid = ?"
                         " AND state = 'complete'", (series_uid,))
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        _log_routes(series_uid, len(instances), routes)
        if self._telemetry is not None:
            for route in routes:
                self._telemetry.rules_fired.labels(rule=route.rule).inc()
        for dest in woken:
            self._wake(dest)
        if any(route.run for route in routes):
            self._wake_jobs()
        return routes

    def _resolve(self, name: str, calling_ae: str) -> str | None:
        """A destination name; `origin` is the configured destination with the sender's AE title."""
        if name != ORIGIN:
            return name
        for dest_name, dest in self._destinations.items():
            if dest.ae_title.strip() == calling_ae.strip():
                return dest_name
        return None


def _read_attributes(paths: list[Path], calling_ae: str) -> dict[str, Any]:
    for path in paths:
        try:
            return series_attributes(dcmread(path, stop_before_pixels=True), calling_ae)
        except Exception as exc:  # a damaged instance must not hide the rest of the series
            log.warning("cannot read %s for routing: %s", path.name, exc)
    raise RuntimeError("no instance of the series could be read")


def _log_routes(series_uid: str, count: int, routes: list[Route]) -> None:
    if not routes:
        log.info("series %s (%d instances): no rule matched", series_uid, count)
    for route in routes:
        action = (f"forward to {', '.join(route.forward_to)}" if route.forward_to
                  else f"run {route.run}, results to {', '.join(route.send_to)}")
        log.info("series %s (%d instances): rule %s fired: %s", series_uid, count, route.rule,
                 action)
