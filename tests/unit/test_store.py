"""Durable state: the spool, the index, the outbox, and the delivery back-off."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomnode.config import OutboxConfig
from dicomnode.delivery import backoff
from dicomnode.errors import StorageFullError
from dicomnode.status import Status
from dicomnode.store.db import connect, initialise
from dicomnode.store.index import Index, InstanceRecord
from dicomnode.store.outbox import (
    Delivery,
    DeliveryItem,
    backlog,
    enqueue_delivery,
    finish_delivery,
    mark_item,
    next_due,
    next_wake,
    pending_items,
    queued_instances,
    reschedule,
)
from dicomnode.store.spool import Spool, uid_hash

# -- spool -------------------------------------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "var" / "spool", min_free_bytes=0)


def _parts(spool: Spool) -> list[Path]:
    return list(spool.root.rglob("*.part"))


def test_spool_creates_its_folders(spool: Spool) -> None:
    assert spool.root.is_dir()
    assert spool.tmp.is_dir()
    assert spool.quarantine.is_dir()


def test_write_stores_the_exact_bytes(spool: Spool) -> None:
    final = spool.path_for("1.2.3", "1.2.3.4")
    data = bytes(range(256)) * 1000
    assert spool.write(final, data) is True
    assert final.read_bytes() == data
    assert _parts(spool) == []
    assert list(spool.tmp.iterdir()) == []


def test_write_of_empty_data(spool: Spool) -> None:
    final = spool.path_for("1.2.3", "1.2.3.5")
    assert spool.write(final, b"") is True
    assert final.read_bytes() == b""


def test_write_keeps_the_first_file(spool: Spool) -> None:
    final = spool.path_for("1.2.3", "1.2.3.4")
    assert spool.write(final, b"first") is True
    assert spool.write(final, b"second, longer") is False
    assert final.read_bytes() == b"first"
    assert _parts(spool) == []
    assert list(spool.tmp.iterdir()) == []


def test_written_files_are_found_by_iter_files(spool: Spool) -> None:
    paths = {spool.path_for("1.2.3", f"1.2.3.{i}") for i in range(3)}
    for path in paths:
        spool.write(path, b"x")
    assert set(spool.iter_files()) == paths


def test_clean_temporary_removes_partial_files(spool: Spool) -> None:
    (spool.tmp / "abc.part").write_bytes(b"partial")
    (spool.tmp / "def.part").write_bytes(b"partial")
    assert spool.clean_temporary() == 2
    assert _parts(spool) == []


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.113619.2.55.3", "../../etc", "../../../etc/passwd", "/etc/passwd", "a/b\\c", "..", "",
     "x" * 500, "1.2\x00.3", "1.2.é"],
)
def test_path_for_never_contains_the_uid_and_stays_under_the_root(spool: Spool, uid: str) -> None:
    for path in (spool.path_for(uid, "1.2.3"), spool.path_for("1.2.3", uid), spool.path_for(uid, uid)):
        assert path.resolve().is_relative_to(spool.root.resolve())
        assert len(path.relative_to(spool.root).parts) == 2
        assert path.suffix == ".dcm"
        if len(uid) > 3:
            assert uid not in str(path.relative_to(spool.root))


def test_hostile_uid_is_written_inside_the_spool(spool: Spool, tmp_path: Path) -> None:
    path = spool.path_for("../../etc", "../../etc/passwd")
    assert spool.write(path, b"data") is True
    assert path.resolve().is_relative_to(spool.root.resolve())
    assert not (tmp_path / "etc").exists()


def test_path_for_is_stable_and_distinct(spool: Spool) -> None:
    assert spool.path_for("1.2.3", "1.2.3.4") == spool.path_for("1.2.3", "1.2.3.4")
    assert spool.path_for("1.2.3", "1.2.3.4") != spool.path_for("1.2.3", "1.2.3.5")
    assert spool.path_for("1.2.3", "1.2.3.4").parent == spool.path_for("1.2.3", "1.2.3.5").parent
    assert spool.path_for("1.2.3", "1.2.3.4").parent != spool.path_for("1.2.4", "1.2.3.4").parent


def test_uid_hash_is_hex() -> None:
    h = uid_hash("1.2.3")
    assert len(h) == 32
    int(h, 16)


def test_check_space_raises_when_the_floor_is_not_met(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=2**62)
    with pytest.raises(StorageFullError) as info:
        spool.check_space()
    assert info.value.status == Status.OUT_OF_RESOURCES
    with pytest.raises(StorageFullError):  # answered from the cached check too
        spool.check_space()


def test_check_space_calls_for_room_when_it_finds_the_disk_short(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=2**62)
    calls: list[bool] = []
    spool.on_full = lambda: calls.append(True)
    for _ in range(3):
        with pytest.raises(StorageFullError):
            spool.check_space()
    assert calls == [True]  # once per real check (at most one a second), not per instance


def test_check_space_passes_with_room(spool: Spool) -> None:
    spool.check_space()


def test_quarantine_keeps_the_bytes_and_the_reason(spool: Spool) -> None:
    path = spool.quarantine_bytes(b"bad dataset", "cannot parse")
    assert path is not None
    assert path.read_bytes() == b"bad dataset"
    assert path.with_suffix(".txt").read_text(encoding="utf-8") == "cannot parse\n"
    assert not path.is_relative_to(spool.root)


# -- database and index ------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "var" / "node.db"
    initialise(path)
    return path


@pytest.fixture
def conn(db: Path) -> Iterator[sqlite3.Connection]:
    c = connect(db)
    yield c
    c.close()


@pytest.fixture
def index(db: Path) -> Iterator[Index]:
    idx = Index(db)
    yield idx
    idx.close()


def _record(sop: str, series: str = "1.2.3", *, at: float = 100.0, images: int | None = None,
            calling_ae: str = "CT01") -> InstanceRecord:
    return InstanceRecord(sop, series, "1.2", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1",
                          1, 1, images, f"/spool/{sop}.dcm", 10, at, calling_ae, "10.0.0.5")


def _series(conn: sqlite3.Connection, uid: str = "1.2.3") -> sqlite3.Row:
    row = conn.execute("SELECT * FROM series WHERE series_uid = ?", (uid,)).fetchone()
    assert row is not None
    return row


def test_initialise_is_idempotent(db: Path) -> None:
    initialise(db)
    c = connect(db)
    try:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"instances", "series", "outbox", "outbox_items", "jobs"} <= tables
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        c.close()


def test_add_is_true_then_false_for_the_same_instance(index: Index, conn: sqlite3.Connection) -> None:
    assert index.add(_record("1.2.3.1")) is True
    assert index.add(_record("1.2.3.1", at=200.0)) is False
    assert index.contains("1.2.3.1")
    assert not index.contains("1.2.3.2")
    row = _series(conn)
    assert row["instance_count"] == 1
    assert row["last_received"] == 100.0
    assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 1


def test_add_creates_then_updates_the_series_row(index: Index, conn: sqlite3.Connection) -> None:
    index.add(_record("1.2.3.1", at=100.0, images=3))
    row = _series(conn)
    assert row["state"] == "receiving"
    assert row["instance_count"] == 1
    assert row["first_received"] == 100.0
    assert row["last_received"] == 100.0
    assert row["expected_count"] == 3
    assert row["study_uid"] == "1.2"
    index.add(_record("1.2.3.2", at=105.0, images=3, calling_ae="CT02"))
    assert _series(conn)["calling_ae"] == "CT02"  # the latest sender
    index.add(_record("1.2.3.3", at=103.0, images=3))  # an older clock never moves time back
    row = _series(conn)
    assert row["instance_count"] == 3
    assert row["first_received"] == 100.0
    assert row["last_received"] == 105.0


def test_add_reopens_a_routed_series(index: Index, conn: sqlite3.Connection) -> None:
    index.add(_record("1.2.3.1"))
    conn.execute("UPDATE series SET state = 'routed' WHERE series_uid = '1.2.3'")
    assert index.add(_record("1.2.3.1", at=150.0)) is False  # a duplicate does not reopen
    assert _series(conn)["state"] == "routed"
    assert index.add(_record("1.2.3.2", at=200.0)) is True
    row = _series(conn)
    assert row["state"] == "receiving"
    assert row["instance_count"] == 2
    assert row["last_received"] == 200.0


def test_known_paths(index: Index) -> None:
    index.add(_record("1.2.3.1"))
    index.add(_record("1.2.3.2"))
    assert index.known_paths() == {"/spool/1.2.3.1.dcm", "/spool/1.2.3.2.dcm"}


def test_mark_released(db: Path, index: Index) -> None:
    index.add(_record("1.1.1", series="1.1"))
    index.add(_record("1.2.1", series="1.2"))
    index.add(_record("1.3.1", series="1.3"))
    c = connect(db)
    try:
        c.execute("UPDATE series SET state = 'complete' WHERE series_uid = '1.3'")
        index.mark_released(["1.1", "1.3"], at=123.0)
        index.mark_released([], at=999.0)
        index.close()  # drains the writer
        released = {r[0]: r[1] for r in c.execute("SELECT series_uid, released_at FROM series")}
    finally:
        c.close()
    # only series still receiving take the release
    assert released == {"1.1": 123.0, "1.2": None, "1.3": None}


# -- outbox ------------------------------------------------------------------------------


ITEMS = [("1.2.3.1", "/spool/a.dcm"), ("1.2.3.2", "/spool/b.dcm"), ("1.2.3.3", "/spool/c.dcm")]


def _enqueue(conn: sqlite3.Connection, destination: str = "pacs", series: str = "1.2.3",
             items: list[tuple[str, str]] = ITEMS, now: float = 100.0) -> int:
    return enqueue_delivery(conn, destination, series, "archive-rule", items, now)


def _outbox(conn: sqlite3.Connection, outbox_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
    assert row is not None
    return row


def test_enqueue_and_next_due(conn: sqlite3.Connection) -> None:
    first = _enqueue(conn)
    second = _enqueue(conn, series="4.5.6", now=101.0)
    assert first != second
    assert next_due(conn, "pacs", 99.0) is None
    assert next_due(conn, "pacs", 100.0) == Delivery(first, "pacs", "1.2.3", "archive-rule", 0)
    assert next_due(conn, "archive", 1000.0) is None
    assert pending_items(conn, first) == [
        DeliveryItem(0, "1.2.3.1", "/spool/a.dcm"),
        DeliveryItem(1, "1.2.3.2", "/spool/b.dcm"),
        DeliveryItem(2, "1.2.3.3", "/spool/c.dcm"),
    ]
    assert _outbox(conn, first)["state"] == "pending"


def test_mark_item_removes_it_from_pending(conn: sqlite3.Connection) -> None:
    oid = _enqueue(conn)
    mark_item(conn, oid, 0, "sent")
    mark_item(conn, oid, 2, "refused", "0xC000")
    assert pending_items(conn, oid) == [DeliveryItem(1, "1.2.3.2", "/spool/b.dcm")]
    row = conn.execute("SELECT state, error FROM outbox_items WHERE outbox_id = ? AND seq = 2",
                       (oid,)).fetchone()
    assert tuple(row) == ("refused", "0xC000")


def test_finish_delivery_delivered(conn: sqlite3.Connection) -> None:
    oid = _enqueue(conn)
    for seq in range(3):
        mark_item(conn, oid, seq, "sent")
    assert finish_delivery(conn, oid, 150.0) == "delivered"
    row = _outbox(conn, oid)
    assert row["state"] == "delivered"
    assert row["last_error"] is None
    assert row["finished_at"] == 150.0
    assert row["attempts"] == 1
    assert next_due(conn, "pacs", 1e9) is None
    assert next_wake(conn, "pacs") is None


def test_finish_delivery_failed_with_refusals(conn: sqlite3.Connection) -> None:
    oid = _enqueue(conn)
    mark_item(conn, oid, 0, "sent")
    mark_item(conn, oid, 1, "refused", "0xA900 dataset does not match SOP class")
    mark_item(conn, oid, 2, "refused", "0xA900 dataset does not match SOP class")
    assert finish_delivery(conn, oid, 150.0) == "failed"
    row = _outbox(conn, oid)
    assert row["state"] == "failed"
    assert row["finished_at"] == 150.0
    assert "2 instance(s) refused" in row["last_error"]
    assert "0xA900" in row["last_error"]
    assert next_due(conn, "pacs", 1e9) is None


def test_finish_delivery_reports_the_first_refusal_in_send_order(conn: sqlite3.Connection) -> None:
    oid = _enqueue(conn)
    mark_item(conn, oid, 0, "sent")
    mark_item(conn, oid, 1, "refused", "0xC000 cannot understand")
    mark_item(conn, oid, 2, "refused", "0xA900 dataset does not match SOP class")
    finish_delivery(conn, oid, 150.0)
    assert _outbox(conn, oid)["last_error"] == "2 instance(s) refused; first: 0xC000 cannot understand"


def test_reschedule_delays_the_delivery(conn: sqlite3.Connection) -> None:
    oid = _enqueue(conn)
    reschedule(conn, oid, "association rejected", 130.0)
    assert next_due(conn, "pacs", 129.9) is None
    due = next_due(conn, "pacs", 130.0)
    assert due is not None and due.id == oid and due.attempts == 1
    row = _outbox(conn, oid)
    assert row["last_error"] == "association rejected"
    assert row["state"] == "pending"
    reschedule(conn, oid, "again", 200.0)
    assert _outbox(conn, oid)["attempts"] == 2
    assert next_wake(conn, "pacs") == 200.0


def test_next_due_is_oldest_first_and_skips_rescheduled(conn: sqlite3.Connection) -> None:
    first = _enqueue(conn, now=100.0)
    second = _enqueue(conn, series="4.5.6", now=100.0)
    due = next_due(conn, "pacs", 100.0)
    assert due is not None and due.id == first
    reschedule(conn, first, "busy", 500.0)
    due = next_due(conn, "pacs", 100.0)
    assert due is not None and due.id == second


def test_next_wake(conn: sqlite3.Connection) -> None:
    assert next_wake(conn, "pacs") is None
    a = _enqueue(conn, now=300.0)
    _enqueue(conn, series="4.5.6", now=250.0)
    _enqueue(conn, destination="archive", now=10.0)
    assert next_wake(conn, "pacs") == 250.0
    assert next_wake(conn, "archive") == 10.0
    reschedule(conn, a, "x", 200.0)
    assert next_wake(conn, "pacs") == 200.0


def test_queued_instances(conn: sqlite3.Connection) -> None:
    assert queued_instances(conn, "1.2.3", "pacs") == set()
    oid = _enqueue(conn, items=ITEMS[:2])
    _enqueue(conn, destination="archive", items=ITEMS[2:])
    _enqueue(conn, series="4.5.6", items=[("4.5.6.1", "/spool/d.dcm")])
    assert queued_instances(conn, "1.2.3", "pacs") == {"1.2.3.1", "1.2.3.2"}
    assert queued_instances(conn, "1.2.3", "archive") == {"1.2.3.3"}
    for seq in range(2):
        mark_item(conn, oid, seq, "sent")
    finish_delivery(conn, oid, 120.0)
    # delivered instances still count as queued: they are never sent twice
    assert queued_instances(conn, "1.2.3", "pacs") == {"1.2.3.1", "1.2.3.2"}


def test_backlog_counts_pending_deliveries_per_destination(conn: sqlite3.Connection) -> None:
    assert backlog(conn) == {}
    a = _enqueue(conn)
    _enqueue(conn, series="4.5.6")
    _enqueue(conn, destination="archive")
    assert backlog(conn) == {"pacs": 2, "archive": 1}
    for seq in range(3):
        mark_item(conn, a, seq, "sent")
    finish_delivery(conn, a, 120.0)
    assert backlog(conn) == {"pacs": 1, "archive": 1}


def test_outbox_survives_a_reopen(db: Path, conn: sqlite3.Connection) -> None:
    oid = _enqueue(conn)
    mark_item(conn, oid, 0, "sent")
    again = connect(db)
    try:
        assert [i.seq for i in pending_items(again, oid)] == [1, 2]
        assert backlog(again) == {"pacs": 1}
    finally:
        again.close()


# -- back-off ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (7, 320.0), (8, 600.0), (9, 600.0), (100, 600.0)],
)
def test_backoff_doubles_up_to_the_ceiling(attempts: int, seconds: float) -> None:
    config = OutboxConfig(retry_start_seconds=5.0, retry_max_seconds=600.0)
    assert backoff(attempts, config) == seconds
    assert isinstance(backoff(attempts, config), float)


def test_backoff_with_start_equal_to_ceiling_is_constant() -> None:
    config = OutboxConfig(retry_start_seconds=30.0, retry_max_seconds=30.0)
    assert [backoff(n, config) for n in range(1, 5)] == [30.0] * 4
