"""The worklist store: ordering, state transitions, acknowledgement, persistence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dicomnode.worklist.store import WorklistStore
from tests.unit.worklist.helpers import tiny_png, triage_entry


@pytest.fixture
def store(tmp_path: Path) -> WorklistStore:
    return WorklistStore(tmp_path / "index.sqlite3")


def order(store: WorklistStore, **filters: object) -> list[str]:
    return [e.study_uid for e in store.list(**filters)]  # type: ignore[arg-type]


def test_categories_rank_critical_then_urgent_then_routine(store: WorklistStore) -> None:
    store.record_result(triage_entry("1.1", "routine", 90.0))
    store.record_result(triage_entry("1.2", "urgent", 10.0))
    store.record_result(triage_entry("1.3", "critical", 5.0))
    assert order(store) == ["1.3", "1.2", "1.1"]


def test_within_a_category_higher_score_first_then_longest_waiting(store: WorklistStore) -> None:
    store.record_result(triage_entry("2.1", "urgent", 50.0, arrived_at=300.0))
    store.record_result(triage_entry("2.2", "urgent", 60.0, arrived_at=400.0))
    store.record_result(triage_entry("2.3", "urgent", 50.0, arrived_at=100.0))
    store.record_result(triage_entry("2.4", "urgent", None, arrived_at=50.0))
    assert order(store) == ["2.2", "2.3", "2.1", "2.4"]


def test_failed_studies_rank_below_critical_above_urgent(store: WorklistStore) -> None:
    store.record_result(triage_entry("3.1", "urgent", 99.0))
    store.record_result(triage_entry("3.2", "critical", 80.0))
    store.record_failure("3.3", "engine crashed", accession_number="ACC33", arrived_at=10.0)
    store.record_pending("3.4", arrived_at=5.0)
    store.record_result(triage_entry("3.5", "routine", 1.0))
    assert order(store) == ["3.2", "3.3", "3.1", "3.4", "3.5"]
    failed = store.get("3.3")
    assert failed is not None
    assert (failed.state, failed.error, failed.accession_number) == ("failed", "engine crashed", "ACC33")


def test_pending_then_result_then_new_series_keeps_the_result(store: WorklistStore) -> None:
    store.record_pending("4.1", series_uid="4.1.1", accession_number="A41", patient_name="Roe^Ann",
                         patient_id="P41", study_description="CT Head", arrived_at=100.0)
    entry = store.get("4.1")
    assert entry is not None and entry.state == "pending" and entry.category is None
    store.record_result(triage_entry("4.1", "critical", 88.0, arrived_at=120.0, accession_number=""))
    store.record_pending("4.1", series_uid="4.1.2", arrived_at=200.0)
    entry = store.get("4.1")
    assert entry is not None
    assert (entry.state, entry.category, entry.score) == ("done", "critical", 88.0)
    assert entry.arrived_at == 100.0  # waiting time counts from the first arrival
    assert entry.accession_number == "A41"  # not blanked by a result without one


def test_failure_then_retry_then_result(store: WorklistStore) -> None:
    store.record_failure("5.1", "out of memory", arrived_at=10.0)
    store.record_pending("5.1", arrived_at=20.0)
    entry = store.get("5.1")
    assert entry is not None and (entry.state, entry.error) == ("pending", None)
    store.record_result(triage_entry("5.1", "routine", 12.0))
    entry = store.get("5.1")
    assert entry is not None and (entry.state, entry.category) == ("done", "routine")


def test_filters(store: WorklistStore) -> None:
    store.record_result(triage_entry("6.1", "critical", 90.0))
    store.record_result(triage_entry("6.2", "routine", 5.0))
    store.record_failure("6.3", "boom")
    store.record_pending("6.4")
    assert store.acknowledge("6.2", "dr a")
    assert order(store, category="critical") == ["6.1"]
    assert order(store, category="none") == ["6.3", "6.4"]
    assert order(store, state="failed") == ["6.3"]
    assert order(store, state="pending") == ["6.4"]
    assert order(store, acknowledged=True) == ["6.2"]
    assert order(store, acknowledged=False) == ["6.1", "6.3", "6.4"]
    with pytest.raises(ValueError, match="unknown category"):
        store.list(category="severe")
    with pytest.raises(ValueError, match="unknown state"):
        store.list(state="running")


def test_acknowledge_keeps_the_first_and_stops_the_clock(store: WorklistStore) -> None:
    store.record_result(triage_entry("7.1", "urgent", 50.0, arrived_at=1000.0))
    assert store.acknowledge("7.1", "dr first", at=1600.0)
    assert store.acknowledge("7.1", "dr second", at=1700.0)
    assert not store.acknowledge("7.404", "dr first")
    entry = store.get("7.1")
    assert entry is not None
    assert (entry.acknowledged, entry.acknowledged_by, entry.acknowledged_at) == (True, "dr first", 1600.0)
    assert entry.waiting_seconds(now=99999.0) == 600.0


def test_escalation_clears_the_acknowledgement(store: WorklistStore) -> None:
    store.record_result(triage_entry("8.1", "routine", 20.0))
    store.acknowledge("8.1", "dr a")
    store.record_result(triage_entry("8.1", "routine", 25.0))
    entry = store.get("8.1")
    assert entry is not None and entry.acknowledged  # same severity: stays acknowledged
    store.record_result(triage_entry("8.1", "critical", 85.0))
    entry = store.get("8.1")
    assert entry is not None and not entry.acknowledged and entry.category == "critical"


def test_a_milder_series_never_replaces_a_critical_one_of_the_same_study(store: WorklistStore) -> None:
    # Thick slices find the bleed; the thin series of the same study, finished later, scores lower.
    store.record_result(triage_entry("8.5", "critical", 91.0, series_uid="8.5.thick",
                                     thumbnail=tiny_png((255, 0, 0)), frame_number=None))
    store.record_result(triage_entry("8.5", "routine", 12.0, series_uid="8.5.thin"))
    entry = store.get("8.5")
    assert entry is not None
    assert (entry.category, entry.score, entry.series_uid) == ("critical", 91.0, "8.5.thick")
    assert store.thumbnail("8.5") == tiny_png((255, 0, 0))  # the thumbnail of the series shown
    # The other order ends the same way.
    store.record_result(triage_entry("8.6", "routine", 12.0, series_uid="8.6.thin"))
    store.record_result(triage_entry("8.6", "critical", 91.0, series_uid="8.6.thick"))
    entry = store.get("8.6")
    assert entry is not None and (entry.category, entry.series_uid) == ("critical", "8.6.thick")
    # Within a category, the higher score leads.
    store.record_result(triage_entry("8.6", "critical", 97.0, series_uid="8.6.bone"))
    entry = store.get("8.6")
    assert entry is not None and (entry.score, entry.series_uid) == (97.0, "8.6.bone")


def test_a_series_sent_again_replaces_only_its_own_result(store: WorklistStore) -> None:
    store.record_result(triage_entry("8.7", "critical", 90.0, series_uid="8.7.a"))
    store.record_result(triage_entry("8.7", "urgent", 50.0, series_uid="8.7.b"))
    store.record_result(triage_entry("8.7", "routine", 10.0, series_uid="8.7.a"))  # a re-sent, corrected
    entry = store.get("8.7")
    assert entry is not None and (entry.category, entry.score, entry.series_uid) == ("urgent", 50.0, "8.7.b")


def test_a_series_that_cannot_be_triaged_is_a_warning_beside_a_result(store: WorklistStore) -> None:
    store.record_result(triage_entry("8.8", "urgent", 55.0, series_uid="8.8.axial"))
    store.record_failure("8.8", "not an axial series", series_uid="8.8.coronal",
                         series_label="4 Coronal MPR")
    entry = store.get("8.8")
    assert entry is not None
    assert (entry.state, entry.category, entry.score, entry.error) == ("done", "urgent", 55.0, None)
    assert entry.warnings == ("series 4 Coronal MPR was not triaged: not an axial series",)
    assert order(store) == ["8.8"] and order(store, state="failed") == []
    # Failure first, result second: the same.
    store.record_failure("8.9", "not an axial series", series_uid="8.9.coronal", series_label="5 Sag")
    entry = store.get("8.9")
    assert entry is not None and (entry.state, entry.error) == ("failed", "not an axial series")
    store.record_result(triage_entry("8.9", "routine", 3.0, series_uid="8.9.axial"))
    entry = store.get("8.9")
    assert entry is not None and (entry.state, entry.category, entry.error) == ("done", "routine", None)
    assert entry.warnings == ("series 5 Sag was not triaged: not an axial series",)
    # The series that had the result now fails when sent again: nothing is left to show.
    store.record_failure("8.9", "out of memory", series_uid="8.9.axial")
    entry = store.get("8.9")
    assert entry is not None
    assert (entry.state, entry.category, entry.error) == ("failed", "routine", "out of memory")


def test_another_series_escalating_the_study_clears_the_acknowledgement(store: WorklistStore) -> None:
    store.record_result(triage_entry("8.10", "urgent", 45.0, series_uid="8.10.a"))
    store.acknowledge("8.10", "dr a")
    store.record_result(triage_entry("8.10", "routine", 5.0, series_uid="8.10.b"))  # milder: nothing new
    entry = store.get("8.10")
    assert entry is not None and entry.acknowledged and entry.category == "urgent"
    store.record_result(triage_entry("8.10", "critical", 80.0, series_uid="8.10.c"))
    entry = store.get("8.10")
    assert entry is not None and not entry.acknowledged and entry.category == "critical"


def test_thumbnail_round_trip(store: WorklistStore) -> None:
    png = tiny_png((255, 0, 0))
    store.record_result(triage_entry("9.1", "critical", 80.0, thumbnail=png))
    store.record_result(triage_entry("9.2", "routine", 1.0))
    assert store.thumbnail("9.1") == png
    assert store.thumbnail("9.2") is None
    assert store.thumbnail("9.404") is None
    first, second = store.list()
    assert first.has_thumbnail and not second.has_thumbnail


def test_warnings_follow_the_latest_result(store: WorklistStore) -> None:
    gap = "a slice may be missing between 10.0 and 20.0 mm along the series"
    store.record_result(triage_entry("9.5", "urgent", 40.0, warnings=(gap,)))
    store.record_pending("9.5")  # another series of the study arrives: the result and its warning stay
    entry = store.get("9.5")
    assert entry is not None and entry.warnings == (gap,)
    store.record_result(triage_entry("9.5", "urgent", 42.0))
    entry = store.get("9.5")
    assert entry is not None and entry.warnings == ()


def test_a_worklist_from_an_earlier_version_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE worklist (study_uid TEXT PRIMARY KEY, series_uid TEXT,"
        " accession_number TEXT NOT NULL DEFAULT '', patient_name TEXT NOT NULL DEFAULT '',"
        " patient_id TEXT NOT NULL DEFAULT '', study_description TEXT NOT NULL DEFAULT '',"
        " arrived_at REAL NOT NULL, result_at REAL, score REAL, category TEXT, top_slice_sop_uid TEXT,"
        " top_slice_index INTEGER, thumbnail BLOB, state TEXT NOT NULL, error TEXT,"
        " acknowledged_by TEXT, acknowledged_at REAL);"
        "INSERT INTO worklist (study_uid, arrived_at, score, category, state)"
        " VALUES ('13.1', 1000.0, 55.0, 'urgent', 'done');"
        "INSERT INTO worklist (study_uid, series_uid, arrived_at, result_at, score, category, state)"
        " VALUES ('13.2', '13.2.old', 1000.0, 1030.0, 88.0, 'critical', 'done');")
    conn.close()
    store = WorklistStore(db)
    try:
        entry = store.get("13.1")
        assert entry is not None and entry.category == "urgent" and entry.warnings == ()
        assert entry.top_slice_frame_number is None
        store.record_result(triage_entry("13.1", "urgent", 56.0, warnings=("check",), frame_number=4))
        entry = store.get("13.1")
        assert entry is not None and (entry.warnings, entry.top_slice_frame_number) == (("check",), 4)
        # The earlier version's critical result counts as its series': a milder series does not hide it.
        store.record_result(triage_entry("13.2", "routine", 8.0, series_uid="13.2.new"))
        entry = store.get("13.2")
        assert entry is not None and (entry.category, entry.series_uid) == ("critical", "13.2.old")
    finally:
        store.close()
    WorklistStore(db).close()  # a second start finds the column and adds nothing


def test_unknown_category_is_refused(store: WorklistStore) -> None:
    with pytest.raises(ValueError, match="unknown triage category"):
        store.record_result(triage_entry("10.1", "severe", 1.0))  # type: ignore[arg-type]
    assert store.get("10.1") is None


def test_the_list_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    first = WorklistStore(db)
    first.record_result(triage_entry("11.1", "routine", 10.0))
    first.record_result(triage_entry("11.2", "critical", 90.0, thumbnail=tiny_png((1, 2, 3))))
    first.acknowledge("11.1", "dr a")
    first.close()
    second = WorklistStore(db)  # creating the table again is harmless
    assert [e.study_uid for e in second.list()] == ["11.2", "11.1"]
    entry = second.get("11.1")
    assert entry is not None and entry.acknowledged_by == "dr a"
    assert second.thumbnail("11.2") == tiny_png((1, 2, 3))
    second.close()


def test_shares_the_node_database_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    from dicomnode.store.db import initialise

    initialise(db)
    store = WorklistStore(db)
    store.record_pending("12.1")
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"worklist", "instances", "outbox"} <= tables
    finally:
        conn.close()
        store.close()
