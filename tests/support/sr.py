"""Reading Structured Reports in tests."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom import Dataset


def walk(items: Iterator[Dataset] | list[Dataset]) -> Iterator[Dataset]:
    """Every content item of a content tree, depth first."""
    for item in items:
        yield item
        yield from walk(item.get("ContentSequence", []))
