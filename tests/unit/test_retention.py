"""Retention: finished series leave the spool; nothing the node has not handed on does."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomnode.config import ConfigError, parse_config
from dicomnode.store.db import connect, initialise
from dicomnode.store.index import Index, InstanceRecord
from dicomnode.store.outbox import enqueue_delivery, enqueue_job, finish_delivery, mark_item
from dicomnode.store.retention import Retention
from dicomnode.store.spool import Spool
from dicomnode.telemetry import Telemetry
from tests.support.ports import wait_for

DAY = 86400.0
NOW = 1_000 * DAY


class Node:
    """The durable state of a node: spool, results, index; series added as the listener would."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.db = data_dir / "index.sqlite3"
        initialise(self.db)
        self.spool = Spool(data_dir / "spool", 0)
        self.results = Spool(data_dir / "results", 0)
        self.index = Index(self.db)
        self.conn = connect(self.db)
        self.free = 10 * 2**30

    def receive(self, series: str, count: int, at: float) -> list[Path]:
        paths = []
        for i in range(count):
            sop = f"{series}.{i}"
            path = self.spool.path_for(series, sop)
            self.spool.write(path, b"instance " + sop.encode())
            self.index.add(InstanceRecord(sop, series, "1.2", "1.2.840.10008.5.1.4.1.1.2",
                                          "1.2.840.10008.1.2.1", i + 1, 1, None, str(path), 10, at,
                                          "CT", "h"))
            paths.append(path)
        self.conn.execute("UPDATE series SET state = 'routed' WHERE series_uid = ?", (series,))
        return paths

    def forward(self, series: str, paths: list[Path], at: float, *, delivered: bool = True) -> int:
        items = [(f"{series}.{i}", str(p)) for i, p in enumerate(paths)]
        outbox_id = enqueue_delivery(self.conn, "pacs", series, "rule", items, at)
        if delivered:
            for seq in range(len(items)):
                mark_item(self.conn, outbox_id, seq, "sent")
            assert finish_delivery(self.conn, outbox_id, at) == "delivered"
        return outbox_id

    def result(self, series: str, at: float, state: str = "done") -> Path:
        job = enqueue_job(self.conn, series, "triage", "anomaly_triage", {}, ["pacs"], at)
        self.conn.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?", (state, at, job))
        path = self.results.path_for(f"{series}.99", f"{series}.99.1")
        self.results.write(path, b"secondary capture")
        return path

    def retention(self, days: float = 7.0, min_free_bytes: int = 2**30,
                  telemetry: Telemetry | None = None) -> Retention:
        return Retention(self.db, self.index, self.data_dir, days, min_free_bytes, telemetry,
                         lambda _: self.free)

    def rows(self, table: str, series: str) -> int:
        column = "outbox_id IN (SELECT id FROM outbox WHERE series_uid = ?)" if table == "outbox_items" \
            else "series_uid = ?"
        return int(self.conn.execute(f"SELECT count(*) FROM {table} WHERE {column}", (series,)).fetchone()[0])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "var")
    yield n
    n.conn.close()
    n.index.close()


def test_a_finished_series_past_retention_is_purged_with_its_results(node: Node) -> None:
    paths = node.receive("1.1", 3, at=NOW - 9 * DAY)
    node.forward("1.1", paths, at=NOW - 9 * DAY)
    result = node.result("1.1", at=NOW - 9 * DAY)
    node.forward("1.1", [result], at=NOW - 8 * DAY)
    kept = node.receive("1.2", 2, at=NOW - 6 * DAY)  # inside the retention

    telemetry = Telemetry()
    report = node.retention(days=7, telemetry=telemetry).run_once(NOW)

    assert (report.series, report.files) == (1, 4)
    assert telemetry.registry.get_sample_value("dicomnode_series_purged_total") == 1
    assert telemetry.registry.get_sample_value("dicomnode_disk_free_bytes") == node.free
    assert not any(p.exists() for p in [*paths, result])
    assert not paths[0].parent.exists() and not result.parent.exists()  # the emptied folders too
    assert all(p.exists() for p in kept)
    for table in ("instances", "series", "outbox_items"):
        assert node.rows(table, "1.1") == 0
    assert node.rows("outbox", "1.1") == 2 and node.rows("jobs", "1.1") == 1  # the history stays
    assert node.rows("instances", "1.2") == 2


@pytest.mark.parametrize("unfinished", ["job pending", "job failed", "delivery pending", "delivery failed",
                                        "still receiving"])
def test_a_series_with_work_not_handed_on_is_never_purged(node: Node, unfinished: str) -> None:
    old = NOW - 30 * DAY
    paths = node.receive("1.1", 2, at=old)
    if unfinished.startswith("job"):
        node.result("1.1", at=old, state=unfinished.split()[1])
    elif unfinished == "delivery pending":
        node.forward("1.1", paths, at=old, delivered=False)
    elif unfinished == "delivery failed":
        outbox_id = node.forward("1.1", paths, at=old, delivered=False)
        node.conn.execute("UPDATE outbox SET state = 'failed', finished_at = ? WHERE id = ?",
                          (old, outbox_id))
    else:
        node.conn.execute("UPDATE series SET state = 'receiving'")
    node.free = 0  # not even when the disk is full

    assert node.retention(days=7).run_once(NOW).series == 0
    assert all(p.exists() for p in paths) and node.rows("instances", "1.1") == 2


def test_the_thread_passes_at_start_and_again_when_woken(node: Node) -> None:
    first = node.receive("1.1", 1, at=time.time() - 9 * DAY)
    retention = node.retention(days=7)  # a pass a minute
    retention.start()
    try:
        wait_for(lambda: not first[0].exists(), 10, "the pass at start")
        second = node.receive("1.2", 1, at=time.time() - 9 * DAY)
        retention.wake()  # as the listener does when it finds the disk short
        wait_for(lambda: not second[0].exists(), 10, "the pass on waking")
    finally:
        retention.stop()


def test_retention_counts_from_the_last_delivery(node: Node) -> None:
    paths = node.receive("1.1", 2, at=NOW - 20 * DAY)  # received long ago, delivered yesterday
    node.forward("1.1", paths, at=NOW - 1 * DAY)
    assert node.retention(days=7).run_once(NOW).series == 0
    assert node.retention(days=7).run_once(NOW + 7 * DAY).series == 1


def test_a_short_disk_purges_finished_series_oldest_first_until_there_is_room(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    first, second, third = (node.receive(uid, 2, at=NOW - days * DAY) for uid, days in
                            (("1.1", 3), ("1.2", 2), ("1.3", 1)))
    for uid, paths in (("1.1", first), ("1.2", second), ("1.3", third)):
        node.forward(uid, paths, at=NOW - 1 * DAY)
    node.conn.execute("UPDATE outbox SET finished_at = NULL")  # their age is their last instance
    retention = node.retention(days=7, min_free_bytes=100)
    node.free = 150  # under twice the floor: make room

    def free(_: Path) -> int:
        return node.free + 100 * sum(not p.exists() for p in first + second)  # each purged series frees 100

    retention._free_bytes = free
    report = retention.run_once(NOW)
    assert report.series == 1  # 150 + 100 reaches the comfortable 200 after the oldest
    assert not any(p.exists() for p in first) and all(p.exists() for p in second + third)
    assert "purging finished series before their retention ends" in caplog.text


def test_an_instance_arriving_during_the_pass_keeps_its_series(node: Node) -> None:
    paths = node.receive("1.1", 2, at=NOW - 9 * DAY)
    retention = node.retention(days=7)
    # The pass found the series finished; before its purge, the series arrives again.
    original = retention._purge

    def arrive_then_purge(series_uid: str, active_before: float) -> tuple[int, int] | None:
        node.index.add(InstanceRecord("1.1.new", "1.1", "1.2", "1.2.840.10008.5.1.4.1.1.2",
                                      "1.2.840.10008.1.2.1", 3, 1, None, str(paths[0].parent / "new.dcm"),
                                      10, NOW, "CT", "h"))
        return original(series_uid, active_before)

    retention._purge = arrive_then_purge  # type: ignore[method-assign]
    assert retention.run_once(NOW).series == 0
    assert all(p.exists() for p in paths) and node.rows("instances", "1.1") == 3


def test_a_purge_interrupted_after_its_files_is_finished_on_the_next_pass(node: Node) -> None:
    paths = node.receive("1.1", 2, at=NOW - 9 * DAY)
    paths[0].unlink()  # the crash came after the first file went
    report = node.retention(days=7).run_once(NOW)
    assert (report.series, report.files) == (1, 1)
    assert node.rows("instances", "1.1") == 0 and node.rows("series", "1.1") == 0


def test_paths_outside_the_data_folder_are_never_removed(node: Node, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes(b"someone else's file")
    node.receive("1.1", 1, at=NOW - 9 * DAY)
    node.conn.execute("UPDATE instances SET path = ?", (str(outside),))
    node.retention(days=7).run_once(NOW)
    assert outside.exists()


def test_quarantined_datasets_go_after_the_retention(node: Node) -> None:
    old = node.spool.quarantine_bytes(b"bad", "no SOP Instance UID")
    new = node.spool.quarantine_bytes(b"bad too", "no SOP Instance UID")
    assert old is not None and new is not None
    for path in (old, old.with_suffix(".txt")):
        os.utime(path, (NOW - 8 * DAY, NOW - 8 * DAY))
    for path in (new, new.with_suffix(".txt")):
        os.utime(path, (NOW - 1 * DAY, NOW - 1 * DAY))
    assert node.retention(days=7).run_once(NOW).quarantined == 1
    assert not old.exists() and not old.with_suffix(".txt").exists()
    assert new.exists() and new.with_suffix(".txt").exists()


def test_retention_days_must_be_positive_or_null() -> None:
    assert parse_config({}).node.retention_days == 7.0
    assert parse_config({"node": {"retention_days": None}}).node.retention_days is None
    assert parse_config({"node": {"retention_days": 0.5}}).node.retention_days == 0.5
    with pytest.raises(ConfigError, match=r"node\.retention_days: must be greater than 0"):
        parse_config({"node": {"retention_days": 0}})


