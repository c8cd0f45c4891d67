"""`dicomnode worklist`: the triage worklist in the terminal, most urgent first.

Patient names and IDs are left out on purpose: a terminal's scroll-back is not a viewer.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from dicomnode.config import Config
from dicomnode.worklist.store import WorklistEntry, WorklistStore

HEADER = ("CATEGORY", "SCORE", "WAITING", "STATE", "ACK", "ACCESSION", "DESCRIPTION", "STUDY UID")


def cmd_worklist(config: Config, out: TextIO | None = None) -> int:
    """Print the worklist of the node configured by `config`; 0 on success."""
    stream = sys.stdout if out is None else out
    db_path = config.node.data_dir / "index.sqlite3"
    if not db_path.exists():
        # A read-only command must not create the node's data folder.
        print(f"no worklist yet: {db_path} does not exist", file=stream)
        return 0
    store = WorklistStore(db_path)
    try:
        entries = store.list()
    finally:
        store.close()
    if not entries:
        print("the worklist is empty", file=stream)
        return 0
    print(format_table(entries, time.time()), file=stream)
    return 0


def format_table(entries: list[WorklistEntry], now: float) -> str:
    rows = [HEADER] + [_row(e, now) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _row(entry: WorklistEntry, now: float) -> tuple[str, ...]:
    if entry.state == "failed":
        category = f"FAILED{f' ({entry.category})' if entry.category else ''}"
    else:
        category = entry.category or ("processing" if entry.state == "pending" else "-")
    description = entry.study_description
    if entry.state == "failed" and entry.error:
        description = f"{description} [{entry.error}]".strip()
    for warning in entry.warnings:
        description = f"{description} [! {warning}]".strip()
    return (
        category,
        "-" if entry.score is None else f"{entry.score:.1f}",
        human_duration(entry.waiting_seconds(now)),
        entry.state,
        entry.acknowledged_by or "",
        entry.accession_number,
        description[:60],
        entry.study_uid,
    )


def human_duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 d 4 h'."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
