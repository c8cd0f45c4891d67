"""The durable outbox and job queue: what must still be sent, and what must still be computed.

A delivery is one series (or the part of it not yet queued) for one destination. Its
instances are rows in `outbox_items`, marked sent or refused one by one, so a retry or
a restart resumes with the first instance not yet delivered.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Delivery:
    id: int
    destination: str
    series_uid: str
    rule: str
    attempts: int


@dataclass(frozen=True)
class DeliveryItem:
    seq: int
    sop_instance_uid: str
    path: str


def enqueue_delivery(
    conn: sqlite3.Connection,
    destination: str,
    series_uid: str,
    rule: str,
    items: Sequence[tuple[str, str]],
    now: float,
) -> int:
    """Queue (sop_instance_uid, path) pairs for `destination`; call inside a transaction."""
    cur = conn.execute(
        "INSERT INTO outbox (destination, series_uid, rule, state, created_at, next_attempt)"
        " VALUES (?, ?, ?, 'pending', ?, ?)",
        (destination, series_uid, rule, now, now),
    )
    outbox_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO outbox_items (outbox_id, seq, sop_instance_uid, path, state)"
        " VALUES (?, ?, ?, ?, 'pending')",
        [(outbox_id, seq, sop, path) for seq, (sop, path) in enumerate(items)],
    )
    return outbox_id


def record_undeliverable(
    conn: sqlite3.Connection, destination: str, series_uid: str, rule: str, reason: str, now: float
) -> None:
    """Keep a visible record of a delivery that cannot even be attempted."""
    conn.execute(
        "INSERT INTO outbox (destination, series_uid, rule, state, created_at, next_attempt,"
        " last_error, finished_at) VALUES (?, ?, ?, 'failed', ?, ?, ?, ?)",
        (destination, series_uid, rule, now, now, reason, now),
    )


def queued_instances(conn: sqlite3.Connection, series_uid: str, destination: str) -> set[str]:
    rows = conn.execute(
        "SELECT i.sop_instance_uid FROM outbox_items i JOIN outbox o ON o.id = i.outbox_id"
        " WHERE o.series_uid = ? AND o.destination = ?",
        (series_uid, destination),
    )
    return {r[0] for r in rows}


def next_due(conn: sqlite3.Connection, destination: str, now: float) -> Delivery | None:
    """The oldest pending delivery for `destination` whose retry time has come."""
    row = conn.execute(
        "SELECT id, destination, series_uid, rule, attempts FROM outbox"
        " WHERE destination = ? AND state = 'pending' AND next_attempt <= ?"
        " ORDER BY id LIMIT 1",
        (destination, now),
    ).fetchone()
    return Delivery(*row) if row else None


def next_wake(conn: sqlite3.Connection, destination: str) -> float | None:
    row = conn.execute(
        "SELECT min(next_attempt) FROM outbox WHERE destination = ? AND state = 'pending'",
        (destination,),
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def pending_items(conn: sqlite3.Connection, outbox_id: int) -> list[DeliveryItem]:
    rows = conn.execute(
        "SELECT seq, sop_instance_uid, path FROM outbox_items"
        " WHERE outbox_id = ? AND state = 'pending' ORDER BY seq",
        (outbox_id,),
    )
    return [DeliveryItem(*r) for r in rows]


def mark_item(conn: sqlite3.Connection, outbox_id: int, seq: int, state: str,
              error: str | None = None) -> None:
    conn.execute(
        "UPDATE outbox_items SET state = ?, error = ? WHERE outbox_id = ? AND seq = ?",
        (state, error, outbox_id, seq),
    )


def finish_delivery(conn: sqlite3.Connection, outbox_id: int, now: float) -> str:
    """Close a delivery whose items are all sent or refused; returns its final state."""
    count, first = conn.execute(
        "SELECT count(*), (SELECT error FROM outbox_items WHERE outbox_id = ?1 AND state = 'refused'"
        " ORDER BY seq LIMIT 1) FROM outbox_items WHERE outbox_id = ?1 AND state = 'refused'",
        (outbox_id,),
    ).fetchone()
    state = "failed" if count else "delivered"
    error = f"{count} instance(s) refused; first: {first}" if count else None
    conn.execute(
        "UPDATE outbox SET state = ?, last_error = ?, finished_at = ?, attempts = attempts + 1"
        " WHERE id = ?",
        (state, error, now, outbox_id),
    )
    return state


def fail_delivery(conn: sqlite3.Connection, outbox_id: int, reason: str, now: float) -> None:
    conn.execute(
        "UPDATE outbox SET state = 'failed', last_error = ?, finished_at = ?,"
        " attempts = attempts + 1 WHERE id = ?",
        (reason, now, outbox_id),
    )


def reschedule(conn: sqlite3.Connection, outbox_id: int, reason: str, next_attempt: float) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE id = ?",
        (next_attempt, reason, outbox_id),
    )


def backlog(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT destination, count(*) FROM outbox WHERE state = 'pending' GROUP BY destination"
    )
    return {r[0]: int(r[1]) for r in rows}


def enqueue_job(
    conn: sqlite3.Connection,
    series_uid: str,
    rule: str,
    generator: str,
    params: Mapping[str, Any],
    send_to: Sequence[str],
    now: float | None = None,
) -> int:
    now = time.time() if now is None else now
    cur = conn.execute(
        "INSERT INTO jobs (series_uid, rule, generator, params, send_to, state, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
        (series_uid, rule, generator, json.dumps(dict(params)), json.dumps(list(send_to)), now, now),
    )
    return int(cur.lastrowid or 0)
