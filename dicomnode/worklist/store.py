"""The triage worklist: one row per study, in SQLite beside the node's index.

Order of the list (what a radiologist reads first):

1. critical results;
2. failed studies: triage could not run, so the study must be read without it and nobody
   may assume it is harmless; they rank just below confirmed critical findings;
3. urgent results;
4. studies still being processed, and results without a category;
5. routine results.

Within a rank: higher score first (no score last), then the longest waiting first.
Acknowledged studies keep their place; clients filter them out with ``acknowledged=False``.

A study that already has a result keeps it when another of its series arrives
(`record_pending`), so a critical finding never disappears behind "processing".

A head CT study often holds several series the rules send to triage: thick and thin slices,
soft-tissue and bone kernels, reformats. Each series keeps its own latest result
(`worklist_series`); the study shows the most severe of them (then the highest score), so a
critical finding in one series is never replaced by a milder result of another, whatever
order they finish in. A series sent again replaces its own earlier result. A series that
cannot be triaged (a coronal reformat, say) marks the study failed only while no series of
it has a result; otherwise it is listed among the study's warnings. When the study's
result becomes more severe than the acknowledged one, the acknowledgement is cleared so
that the escalation is seen.
"""

from __future__ import annotations

import builtins
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from dicomnode.store.db import connect

log = logging.getLogger(__name__)

Category = Literal["critical", "urgent", "routine"]
State = Literal["pending", "done", "failed"]
CATEGORIES: tuple[Category, ...] = ("critical", "urgent", "routine")
STATES: tuple[State, ...] = ("pending", "done", "failed")

# A triage result, as the study's row and each series' row hold it.
_RESULT_COLUMNS = """
    score REAL,
    category TEXT CHECK (category IN ('critical', 'urgent', 'routine')),
    top_slice_sop_uid TEXT,
    top_slice_index INTEGER,
    top_slice_frame_number INTEGER,
    thumbnail BLOB,"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS worklist (
    study_uid TEXT PRIMARY KEY,
    series_uid TEXT,
    accession_number TEXT NOT NULL DEFAULT '',
    patient_name TEXT NOT NULL DEFAULT '',
    patient_id TEXT NOT NULL DEFAULT '',
    study_description TEXT NOT NULL DEFAULT '',
    arrived_at REAL NOT NULL,
    result_at REAL,{_RESULT_COLUMNS}
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    error TEXT,
    acknowledged_by TEXT,
    acknowledged_at REAL,
    warnings TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS worklist_by_state ON worklist (state, category);
CREATE TABLE IF NOT EXISTS worklist_series (
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    result_at REAL NOT NULL,{_RESULT_COLUMNS}
    warnings TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL CHECK (state IN ('done', 'failed')),
    error TEXT,
    PRIMARY KEY (study_uid, series_uid)
);
"""

# A worklist from before per-series results: each study's one result becomes its series'.
_SEED_SERIES = """
INSERT OR IGNORE INTO worklist_series (study_uid, series_uid, result_at, score, category,
    top_slice_sop_uid, top_slice_index, top_slice_frame_number, thumbnail, warnings, state, error)
SELECT study_uid, series_uid, COALESCE(result_at, arrived_at), score, category, top_slice_sop_uid,
    top_slice_index, top_slice_frame_number, thumbnail, warnings, state, error
FROM worklist
WHERE series_uid IS NOT NULL AND state IN ('done', 'failed')
    AND NOT EXISTS (SELECT 1 FROM worklist_series s WHERE s.study_uid = worklist.study_uid)
"""

# The series whose result the study shows: the most severe, then the highest score, then the latest.
_LEAD_SERIES = """
SELECT * FROM worklist_series WHERE study_uid = ? AND state = 'done'
ORDER BY CASE category WHEN 'critical' THEN 0 WHEN 'urgent' THEN 1 WHEN 'routine' THEN 2 ELSE 3 END,
    score IS NULL, score DESC, result_at DESC
LIMIT 1
"""

# Lower ranks are read first; see the module docstring.
_RANK = """
CASE
    WHEN category = 'critical' THEN 0
    WHEN state = 'failed' THEN 1
    WHEN category = 'urgent' THEN 2
    WHEN category = 'routine' THEN 4
    ELSE 3
END
"""
_SEVERITY = {"critical": 0, "urgent": 1, "routine": 2}

_COLUMNS = (
    "study_uid, series_uid, accession_number, patient_name, patient_id, study_description, arrived_at,"
    " result_at, score, category, top_slice_sop_uid, top_slice_index, top_slice_frame_number,"
    " thumbnail IS NOT NULL AS has_thumbnail,"
    " state, error, acknowledged_by, acknowledged_at, warnings"
)

# Columns added after the first release: (name, definition), added to older databases at start.
_ADDED_COLUMNS = (("warnings", "TEXT NOT NULL DEFAULT '[]'"), ("top_slice_frame_number", "INTEGER"))


@dataclass(frozen=True)
class TriageEntry:
    """A triage result, as the anomaly-triage generator hands it over."""

    study_uid: str
    series_uid: str
    accession_number: str
    patient_name: str
    patient_id: str
    study_description: str
    arrived_at: float  # first instance of the series received (epoch seconds)
    result_at: float
    score: float | None
    category: Category | None
    top_slice_sop_uid: str | None = None
    top_slice_index: int | None = None
    top_slice_frame_number: int | None = None  # 1-based, where the top slice is a frame of an enhanced CT
    series_label: str = ""  # "SeriesNumber SeriesDescription", to name the series to the reader
    thumbnail_png: bytes | None = None  # heat map on the most anomalous slice
    warnings: tuple[str, ...] = ()  # about the input, for the reader (a slice that may be missing)


@dataclass(frozen=True)
class WorklistEntry:
    """One study on the worklist, as stored (the thumbnail is fetched on its own)."""

    study_uid: str
    series_uid: str | None
    accession_number: str
    patient_name: str
    patient_id: str
    study_description: str
    arrived_at: float
    result_at: float | None
    score: float | None
    category: Category | None
    top_slice_sop_uid: str | None
    top_slice_index: int | None
    top_slice_frame_number: int | None
    has_thumbnail: bool
    state: State
    error: str | None
    acknowledged_by: str | None
    acknowledged_at: float | None
    warnings: tuple[str, ...] = ()

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def waiting_seconds(self, now: float) -> float:
        """Time since arrival, stopped when someone acknowledged the study."""
        end = self.acknowledged_at if self.acknowledged_at is not None else now
        return max(0.0, end - self.arrived_at)


class WorklistStore:
    """Thread-safe access to the worklist table; creates it if needed (idempotent)."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(db_path)
        self._lock = threading.Lock()
        self._conn.executescript(SCHEMA)
        self._add_missing_columns()
        with self._conn:
            self._conn.execute(_SEED_SERIES)

    def _add_missing_columns(self) -> None:
        """Bring a worklist written by an earlier version up to the current columns."""
        present = {row["name"] for row in self._conn.execute("PRAGMA table_info(worklist)")}
        for name, definition in _ADDED_COLUMNS:
            if name not in present:
                self._conn.execute(f"ALTER TABLE worklist ADD COLUMN {name} {definition}")
                log.info("worklist: added column %s", name)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def record_pending(
        self,
        study_uid: str,
        *,
        series_uid: str | None = None,
        accession_number: str = "",
        patient_name: str = "",
        patient_id: str = "",
        study_description: str = "",
        arrived_at: float | None = None,
    ) -> None:
        """A study arrived and is being processed. An existing result is kept; a failure is retried."""
        arrived = time.time() if arrived_at is None else arrived_at
        with self._lock:
            self._conn.execute(
                "INSERT INTO worklist (study_uid, series_uid, accession_number, patient_name, patient_id,"
                " study_description, arrived_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')"
                " ON CONFLICT (study_uid) DO UPDATE SET"
                " series_uid = COALESCE(worklist.series_uid, excluded.series_uid),"
                " accession_number = COALESCE(NULLIF(worklist.accession_number, ''),"
                "   excluded.accession_number),"
                " patient_name = COALESCE(NULLIF(worklist.patient_name, ''), excluded.patient_name),"
                " patient_id = COALESCE(NULLIF(worklist.patient_id, ''), excluded.patient_id),"
                " study_description = COALESCE(NULLIF(worklist.study_description, ''),"
                "   excluded.study_description),"
                " arrived_at = MIN(worklist.arrived_at, excluded.arrived_at),"
                " state = CASE WHEN worklist.state = 'done' THEN 'done' ELSE 'pending' END,"
                " error = CASE WHEN worklist.state = 'done' THEN worklist.error ELSE NULL END",
                (study_uid, series_uid, accession_number, patient_name, patient_id, study_description,
                 arrived),
            )
        log.info("worklist: study %s pending", study_uid)

    def record_result(self, entry: TriageEntry) -> tuple[Category | None, Category | None]:
        """Store a series' triage result; the study shows its most severe series (module docstring).

        Returns the category the study showed before and shows now.
        """
        if entry.category is not None and entry.category not in CATEGORIES:
            raise ValueError(f"unknown triage category {entry.category!r}")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO worklist_series (study_uid, series_uid, label, result_at, score,"
                    " category, top_slice_sop_uid, top_slice_index, top_slice_frame_number, thumbnail,"
                    " warnings, state, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'done', NULL)",
                    (entry.study_uid, entry.series_uid, entry.series_label, entry.result_at, entry.score,
                     entry.category, entry.top_slice_sop_uid, entry.top_slice_index,
                     entry.top_slice_frame_number, entry.thumbnail_png, json.dumps(list(entry.warnings))),
                )
                self._conn.execute(
                    "INSERT INTO worklist (study_uid, series_uid, accession_number, patient_name, patient_id,"
                    " study_description, arrived_at, result_at, state)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'done')"
                    " ON CONFLICT (study_uid) DO UPDATE SET"
                    " accession_number = COALESCE(NULLIF(excluded.accession_number, ''),"
                    "   worklist.accession_number),"
                    " patient_name = COALESCE(NULLIF(excluded.patient_name, ''), worklist.patient_name),"
                    " patient_id = COALESCE(NULLIF(excluded.patient_id, ''), worklist.patient_id),"
                    " study_description = COALESCE(NULLIF(excluded.study_description, ''),"
                    "   worklist.study_description),"
                    " arrived_at = MIN(worklist.arrived_at, excluded.arrived_at)",
                    (entry.study_uid, entry.series_uid, entry.accession_number, entry.patient_name,
                     entry.patient_id, entry.study_description, entry.arrived_at, entry.result_at),
                )
                shown = self._show_lead_series(entry.study_uid)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        assert shown is not None  # the series just stored has a result
        log.info("worklist: study %s, series %s triaged as %s (score %s); the study shows %s",
                 entry.study_uid, entry.series_uid, entry.category, entry.score, shown[1])
        return shown

    def record_failure(
        self,
        study_uid: str,
        error: str,
        *,
        series_uid: str | None = None,
        series_label: str = "",
        accession_number: str = "",
        study_description: str = "",
        arrived_at: float | None = None,
        failed_at: float | None = None,
    ) -> None:
        """Triage of a series failed. The study is flagged failed, with the reason, unless another
        of its series has a result; then the failure is one of the study's warnings."""
        now = time.time() if failed_at is None else failed_at
        arrived = now if arrived_at is None else arrived_at
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO worklist_series (study_uid, series_uid, label, result_at, state,"
                    " error) VALUES (?, ?, ?, ?, 'failed', ?)",
                    (study_uid, series_uid or "", series_label, now, error),
                )
                self._conn.execute(
                    "INSERT INTO worklist (study_uid, series_uid, accession_number, study_description,"
                    " arrived_at, result_at, state, error) VALUES (?, ?, ?, ?, ?, ?, 'failed', ?)"
                    " ON CONFLICT (study_uid) DO UPDATE SET"
                    " series_uid = COALESCE(worklist.series_uid, excluded.series_uid),"
                    " accession_number = COALESCE(NULLIF(worklist.accession_number, ''),"
                    "   excluded.accession_number),"
                    " study_description = COALESCE(NULLIF(worklist.study_description, ''),"
                    "   excluded.study_description),"
                    " arrived_at = MIN(worklist.arrived_at, excluded.arrived_at)",
                    (study_uid, series_uid, accession_number, study_description, arrived, now, error),
                )
                if self._show_lead_series(study_uid) is None:
                    self._conn.execute(
                        "UPDATE worklist SET result_at = ?, state = 'failed', error = ? WHERE study_uid = ?",
                        (now, error, study_uid),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        log.warning("worklist: triage of study %s, series %s failed: %s", study_uid, series_uid, error)

    def _show_lead_series(self, study_uid: str) -> tuple[Category | None, Category | None] | None:
        """Put the study's lead series' result on its row (in the caller's transaction) and return
        the category the study showed before and shows now; None if no series of the study has a
        result. Clears an acknowledgement the result escalates."""
        lead = self._conn.execute(_LEAD_SERIES, (study_uid,)).fetchone()
        if lead is None:
            return None
        failed = self._conn.execute(
            "SELECT series_uid, label, error FROM worklist_series WHERE study_uid = ? AND state = 'failed'"
            " ORDER BY result_at", (study_uid,),
        ).fetchall()
        warnings = [*json.loads(lead["warnings"]), *(
            f"series {row['label'] or row['series_uid'] or '(unknown)'} was not triaged: {row['error']}"
            for row in failed)]
        row = self._conn.execute(
            "SELECT category, acknowledged_at FROM worklist WHERE study_uid = ?", (study_uid,)
        ).fetchone()
        self._conn.execute(
            "UPDATE worklist SET series_uid = ?, result_at = ?, score = ?, category = ?,"
            " top_slice_sop_uid = ?, top_slice_index = ?, top_slice_frame_number = ?, thumbnail = ?,"
            " warnings = ?, state = 'done', error = NULL WHERE study_uid = ?",
            (lead["series_uid"], lead["result_at"], lead["score"], lead["category"],
             lead["top_slice_sop_uid"], lead["top_slice_index"], lead["top_slice_frame_number"],
             lead["thumbnail"], json.dumps(warnings), study_uid),
        )
        if row["acknowledged_at"] is not None and _escalates(row["category"], lead["category"]):
            self._conn.execute(
                "UPDATE worklist SET acknowledged_by = NULL, acknowledged_at = NULL WHERE study_uid = ?",
                (study_uid,),
            )
            log.warning("worklist: study %s escalated to %s; acknowledgement cleared",
                        study_uid, lead["category"])
        return cast(Category | None, row["category"]), cast(Category | None, lead["category"])

    def acknowledge(self, study_uid: str, by: str, *, at: float | None = None) -> bool:
        """Mark a study as seen; False if it is unknown. The first acknowledgement is kept."""
        now = time.time() if at is None else at
        with self._lock:
            cur = self._conn.execute(
                "UPDATE worklist SET acknowledged_by = COALESCE(acknowledged_by, ?),"
                " acknowledged_at = COALESCE(acknowledged_at, ?) WHERE study_uid = ?",
                (by, now, study_uid),
            )
        found = cur.rowcount > 0
        if found:
            log.info("worklist: study %s acknowledged", study_uid)
        return found

    def ping(self) -> None:
        """Raise if the database does not answer (for health checks)."""
        with self._lock:
            self._conn.execute("SELECT 1 FROM worklist LIMIT 1").fetchall()

    def get(self, study_uid: str) -> WorklistEntry | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM worklist WHERE study_uid = ?", (study_uid,)
            ).fetchone()
        return None if row is None else _entry(row)

    def thumbnail(self, study_uid: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT thumbnail FROM worklist WHERE study_uid = ?", (study_uid,)
            ).fetchone()
        return None if row is None or row["thumbnail"] is None else bytes(row["thumbnail"])

    def list(
        self,
        category: str | None = None,
        state: str | None = None,
        acknowledged: bool | None = None,
    ) -> builtins.list[WorklistEntry]:
        """Studies, most urgent first (see the module docstring). `category="none"` selects uncategorised."""
        where: list[str] = []
        params: list[Any] = []
        if category is not None:
            if category == "none":
                where.append("category IS NULL")
            elif category in CATEGORIES:
                where.append("category = ?")
                params.append(category)
            else:
                raise ValueError(
                    f"unknown category {category!r} (expected one of critical, urgent, routine, none)"
                )
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown state {state!r} (expected one of pending, done, failed)")
            where.append("state = ?")
            params.append(state)
        if acknowledged is not None:
            where.append("acknowledged_at IS NOT NULL" if acknowledged else "acknowledged_at IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (f"SELECT {_COLUMNS} FROM worklist{clause}"
               f" ORDER BY {_RANK}, score IS NULL, score DESC, arrived_at ASC, study_uid")
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_entry(r) for r in rows]


def _escalates(old: str | None, new: str | None) -> bool:
    """Whether a new category is more severe than the one that was acknowledged."""
    if new is None:
        return False
    # Acknowledged before any result (read without triage): only urgent or critical re-surface it.
    return _SEVERITY[new] < _SEVERITY[old or "routine"]


def _entry(row: sqlite3.Row) -> WorklistEntry:
    return WorklistEntry(
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
        accession_number=row["accession_number"],
        patient_name=row["patient_name"],
        patient_id=row["patient_id"],
        study_description=row["study_description"],
        arrived_at=row["arrived_at"],
        result_at=row["result_at"],
        score=row["score"],
        category=cast(Category | None, row["category"]),
        top_slice_sop_uid=row["top_slice_sop_uid"],
        top_slice_index=row["top_slice_index"],
        top_slice_frame_number=row["top_slice_frame_number"],
        has_thumbnail=bool(row["has_thumbnail"]),
        state=cast(State, row["state"]),
        error=row["error"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        warnings=tuple(str(w) for w in json.loads(row["warnings"])),
    )
