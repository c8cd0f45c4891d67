"""Series completion: quiescence, association release, expected counts; state in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomnode.config import SeriesConfig
from dicomnode.series import SeriesState, complete_ready, completion_reason, series_awaiting_routing
from dicomnode.store.db import connect, initialise
from dicomnode.store.index import Index, InstanceRecord

CONFIG = SeriesConfig(stable_seconds=10.0, release_grace_seconds=2.0)


def _state(
    *,
    count: int = 5,
    last: float = 100.0,
    released: float | None = None,
    expected: int | None = None,
) -> SeriesState:
    return SeriesState("1.2.3", count, last, released, expected)


# -- completion_reason -------------------------------------------------------------------


@pytest.mark.parametrize(("now", "complete"), [(100.0, False), (109.99, False), (110.0, True), (500.0, True)])
def test_quiescence(now: float, complete: bool) -> None:
    reason = completion_reason(_state(last=100.0), now, CONFIG, expected_consistent=False)
    assert (reason is not None) is complete
    if complete:
        assert reason is not None and "10 s" in reason


@pytest.mark.parametrize(
    ("released", "now", "complete"),
    [
        (100.5, 101.0, False),  # released but the grace has not passed
        (100.5, 102.0, True),  # grace counted from the last instance
        (100.0, 102.0, True),  # released at the very moment of the last instance
        (99.0, 103.0, False),  # released before the last instance: another association sent it
        (None, 109.0, False),  # never released
    ],
)
def test_release_signal(released: float | None, now: float, complete: bool) -> None:
    reason = completion_reason(_state(last=100.0, released=released), now, CONFIG, False)
    assert (reason is not None) is complete
    if complete:
        assert reason == "sender released the association"


def test_release_signal_disabled_by_zero_grace() -> None:
    config = SeriesConfig(stable_seconds=10.0, release_grace_seconds=0.0)
    state = _state(last=100.0, released=100.0)
    assert completion_reason(state, 100.0, config, False) is None
    assert completion_reason(state, 105.0, config, False) is None
    assert completion_reason(state, 110.0, config, False) is not None  # quiescence still applies


@pytest.mark.parametrize(
    ("count", "expected", "consistent", "complete"),
    [
        (5, 5, True, True),
        (6, 5, True, True),
        (4, 5, True, False),
        (5, 5, False, False),  # inconsistent acquisition numbers: only quiescence completes
        (5, None, True, False),
        (0, 0, True, False),
    ],
)
def test_expected_count(count: int, expected: int | None, consistent: bool, complete: bool) -> None:
    reason = completion_reason(_state(count=count, last=100.0, expected=expected), 100.0, CONFIG, consistent)
    assert (reason is not None) is complete
    if complete:
        assert reason is not None and f"all {expected}" in reason


def test_quiescence_wins_when_several_signals_hold() -> None:
    state = _state(count=5, last=100.0, released=100.0, expected=5)
    reason = completion_reason(state, 200.0, CONFIG, True)
    assert reason is not None and reason.startswith("no new instance")


# -- complete_ready on a real database ----------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "var" / "node.db"
    initialise(path)
    return path


@pytest.fixture
def index(db: Path) -> Iterator[Index]:
    idx = Index(db)
    yield idx
    idx.close()


@pytest.fixture
def conn(db: Path) -> Iterator[sqlite3.Connection]:
    c = connect(db)
    yield c
    c.close()


def _record(
    sop: str,
    series: str = "1.2.3",
    *,
    at: float = 100.0,
    acquisition: int | None = 1,
    images: int | None = None,
    number: int | None = None,
) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        series_uid=series,
        study_uid="1.2",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        instance_number=number,
        acquisition_number=acquisition,
        images_in_acquisition=images,
        path=f"/spool/{sop}.dcm",
        size=1000,
        received_at=at,
        calling_ae="CT01",
        peer_host="10.0.0.5",
    )


def _series_row(conn: sqlite3.Connection, uid: str = "1.2.3") -> sqlite3.Row:
    row = conn.execute("SELECT * FROM series WHERE series_uid = ?", (uid,)).fetchone()
    assert row is not None
    return row


def test_nothing_completes_on_an_empty_database(conn: sqlite3.Connection) -> None:
    assert complete_ready(conn, CONFIG, 1e9) == []


def test_quiet_series_completes(index: Index, conn: sqlite3.Connection) -> None:
    for i in range(3):
        assert index.add(_record(f"1.2.3.{i}", at=100.0 + i))
    assert complete_ready(conn, CONFIG, 111.9) == []
    assert complete_ready(conn, CONFIG, 112.0) == ["1.2.3"]
    row = _series_row(conn)
    assert row["state"] == "complete"
    assert row["completed_at"] == 112.0
    assert row["completion_reason"].startswith("no new instance")
    assert row["completions"] == 1
    # completes once: a second pass finds nothing new
    assert complete_ready(conn, CONFIG, 200.0) == []
    assert series_awaiting_routing(conn) == ["1.2.3"]


def test_only_the_quiet_series_completes(index: Index, conn: sqlite3.Connection) -> None:
    index.add(_record("1.1.1", series="1.1", at=100.0))
    index.add(_record("1.2.1", series="1.2", at=105.0))
    assert complete_ready(conn, CONFIG, 110.0) == ["1.1"]
    assert _series_row(conn, "1.2")["state"] == "receiving"


def test_released_series_completes_after_the_grace(index: Index, conn: sqlite3.Connection) -> None:
    index.add(_record("1.2.3.1", at=100.0))
    index.add(_record("1.2.3.2", at=100.5))
    index.mark_released(["1.2.3"], at=101.0)
    index.close()  # drains the writer: mark_released is not awaited
    assert complete_ready(conn, CONFIG, 102.0) == []
    assert complete_ready(conn, CONFIG, 102.5) == ["1.2.3"]
    assert _series_row(conn)["completion_reason"] == "sender released the association"


def test_full_acquisition_completes_at_once(index: Index, conn: sqlite3.Connection) -> None:
    for i in range(3):
        index.add(_record(f"1.2.3.{i}", at=100.0, acquisition=1, images=3))
    assert complete_ready(conn, CONFIG, 100.0) == ["1.2.3"]
    assert _series_row(conn)["completion_reason"] == "all 3 images in acquisition received"


def test_partial_acquisition_waits(index: Index, conn: sqlite3.Connection) -> None:
    for i in range(2):
        index.add(_record(f"1.2.3.{i}", at=100.0, acquisition=1, images=3))
    assert complete_ready(conn, CONFIG, 100.0) == []
    assert _series_row(conn)["state"] == "receiving"


def test_inconsistent_acquisition_number_does_not_complete_early(
    index: Index, conn: sqlite3.Connection
) -> None:
    # Two acquisitions of 2 images each: 4 instances >= 2 expected, but they are not one acquisition.
    index.add(_record("1.2.3.1", at=100.0, acquisition=1, images=2))
    index.add(_record("1.2.3.2", at=100.0, acquisition=2, images=2))
    index.add(_record("1.2.3.3", at=100.0, acquisition=2, images=2))
    assert complete_ready(conn, CONFIG, 100.0) == []
    assert _series_row(conn)["state"] == "receiving"
    assert complete_ready(conn, CONFIG, 110.0) == ["1.2.3"]  # quiescence still completes it
    assert _series_row(conn)["completion_reason"].startswith("no new instance")


def test_inconsistent_images_in_acquisition_does_not_complete_early(
    index: Index, conn: sqlite3.Connection
) -> None:
    index.add(_record("1.2.3.1", at=100.0, acquisition=1, images=2))
    index.add(_record("1.2.3.2", at=100.0, acquisition=1, images=5))
    assert complete_ready(conn, CONFIG, 100.0) == []


def test_missing_acquisition_number_on_some_instances_does_not_complete_early(
    index: Index, conn: sqlite3.Connection
) -> None:
    index.add(_record("1.2.3.1", at=100.0, acquisition=1, images=2))
    index.add(_record("1.2.3.2", at=100.0, acquisition=None, images=2))
    assert complete_ready(conn, CONFIG, 100.0) == []


def test_completion_state_persists_across_a_reopen(db: Path, index: Index) -> None:
    index.add(_record("1.2.3.1", at=100.0))
    index.add(_record("1.2.3.2", series="4.5.6", at=100.0))
    index.close()
    first = connect(db)
    try:
        assert sorted(complete_ready(first, CONFIG, 110.0)) == ["1.2.3", "4.5.6"]
    finally:
        first.close()
    again = connect(db)
    try:
        rows = {r["series_uid"]: r for r in again.execute("SELECT * FROM series")}
        assert {uid: r["state"] for uid, r in rows.items()} == {"1.2.3": "complete", "4.5.6": "complete"}
        assert rows["1.2.3"]["completed_at"] == 110.0
        assert complete_ready(again, CONFIG, 1000.0) == []
        assert sorted(series_awaiting_routing(again)) == ["1.2.3", "4.5.6"]
    finally:
        again.close()


def test_series_incomplete_at_shutdown_completes_after_a_reopen(db: Path, index: Index) -> None:
    index.add(_record("1.2.3.1", at=100.0))
    index.close()
    first = connect(db)
    try:
        assert complete_ready(first, CONFIG, 105.0) == []
    finally:
        first.close()
    again = connect(db)
    try:
        assert complete_ready(again, CONFIG, 110.0) == ["1.2.3"]
    finally:
        again.close()


def test_an_instance_after_completion_reopens_the_series(index: Index, conn: sqlite3.Connection) -> None:
    index.add(_record("1.2.3.1", at=100.0))
    assert complete_ready(conn, CONFIG, 110.0) == ["1.2.3"]
    index.add(_record("1.2.3.2", at=120.0))
    row = _series_row(conn)
    assert row["state"] == "receiving"
    assert row["instance_count"] == 2
    assert complete_ready(conn, CONFIG, 125.0) == []
    assert complete_ready(conn, CONFIG, 130.0) == ["1.2.3"]
    assert _series_row(conn)["completions"] == 2


def test_routed_series_is_not_completed_again(index: Index, conn: sqlite3.Connection) -> None:
    index.add(_record("1.2.3.1", at=100.0))
    assert complete_ready(conn, CONFIG, 110.0) == ["1.2.3"]
    conn.execute("UPDATE series SET state = 'routed' WHERE series_uid = '1.2.3'")
    assert complete_ready(conn, CONFIG, 1000.0) == []
    assert series_awaiting_routing(conn) == []
