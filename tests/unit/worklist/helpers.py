"""Builders shared by the worklist tests (also used by the browser test)."""

from __future__ import annotations

import struct
import zlib

from dicomnode.worklist.store import Category, TriageEntry


def tiny_png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A valid size x size PNG of one colour, written by hand so tests need no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def triage_entry(
    study_uid: str,
    category: Category | None,
    score: float | None,
    *,
    arrived_at: float = 1000.0,
    accession_number: str | None = None,
    thumbnail: bytes | None = None,
    warnings: tuple[str, ...] = (),
    frame_number: int | None = None,
    series_uid: str | None = None,
    series_label: str = "",
) -> TriageEntry:
    return TriageEntry(
        study_uid=study_uid,
        series_uid=series_uid or f"{study_uid}.1",
        series_label=series_label,
        accession_number=accession_number if accession_number is not None else f"ACC{study_uid[-4:]}",
        patient_name="Doe^Jane",
        patient_id="PID-1",
        study_description="CT Head without contrast",
        arrived_at=arrived_at,
        result_at=arrived_at + 30.0,
        score=score,
        category=category,
        top_slice_sop_uid=f"{study_uid}.1.7",
        top_slice_index=7,
        top_slice_frame_number=frame_number,
        thumbnail_png=thumbnail,
        warnings=warnings,
    )


def heatmap_png(size: int = 64) -> bytes:
    """A grey disc with a red-yellow hot spot: looks like a heat map overlay in screenshots."""

    def pixel(x: int, y: int) -> bytes:
        cx, cy, r = size / 2, size / 2, size * 0.45
        if (x - cx) ** 2 + (y - cy) ** 2 > r * r:
            return b"\x00\x00\x00"
        grey = 70 + int(40 * ((x * 7 + y * 3) % 5) / 5)
        heat = max(0.0, 1 - (((x - size * 0.62) ** 2 + (y - size * 0.4) ** 2) ** 0.5) / (size * 0.18))
        red = min(255, int(grey + heat * 220))
        green = min(255, int(grey * (1 - heat) + heat * heat * 200))
        return bytes((red, green, int(grey * (1 - heat))))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(size)) for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))
