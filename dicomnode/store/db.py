"""The SQLite database behind the index, the job queue and the outbox: schema and connections.

WAL mode lets the listener, the series monitor and the delivery workers read and write
concurrently. `synchronous=NORMAL` survives a process crash (SIGKILL) without losing a
commit; after a power loss the last commits may be missing, which is why start-up
reconciles the spool (whose files are fsync'd) against the index.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    instance_number INTEGER,
    acquisition_number INTEGER,
    images_in_acquisition INTEGER,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    calling_ae TEXT NOT NULL,
    peer_host TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (series_uid, instance_number);

CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('receiving', 'complete', 'routed')),
    instance_count INTEGER NOT NULL,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    released_at REAL,
    expected_count INTEGER,
    calling_ae TEXT NOT NULL,
    peer_host TEXT NOT NULL,
    completed_at REAL,
    completion_reason TEXT,
    completions INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS series_by_state ON series (state);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (destination, state, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_by_series ON outbox (series_uid);

CREATE TABLE IF NOT EXISTS outbox_items (
    outbox_id INTEGER NOT NULL REFERENCES outbox (id),
    seq INTEGER NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'refused')),
    error TEXT,
    PRIMARY KEY (outbox_id, seq)
);
CREATE INDEX IF NOT EXISTS outbox_items_by_sop ON outbox_items (sop_instance_uid);

CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid TEXT NOT NULL,
    rule TEXT NOT NULL,
    generator TEXT NOT NULL,
    params TEXT NOT NULL,
    send_to TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, generator);
CREATE INDEX IF NOT EXISTS jobs_by_series ON jobs (series_uid);

CREATE TABLE IF NOT EXISTS hl7_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS hl7_outbox_due ON hl7_outbox (state, next_attempt);
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open a connection in autocommit mode; callers group writes with `BEGIN IMMEDIATE`."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def initialise(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()
