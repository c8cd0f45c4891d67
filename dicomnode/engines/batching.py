"""Split any number of slices into batches a backend accepts, and join the outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from dicomnode.engines.errors import EngineRunError

Arrays = dict[str, np.ndarray]
RunBatch = Callable[[Arrays], Arrays]


def batch_slices(count: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most `batch_size` covering range(count)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def bounded_batch_size(
    wanted: int, limit: int, bytes_per_slice: int, max_batch_bytes: int | None
) -> int:
    """The batch size to use: what was asked, within the model's limit and the memory bound."""
    size = max(1, min(wanted, limit))
    if max_batch_bytes is not None and bytes_per_slice > 0:
        size = max(1, min(size, max_batch_bytes // bytes_per_slice))
    return size


def run_batched(
    run: RunBatch,
    inputs: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    min_batch: int = 1,
) -> Arrays:
    """Run `inputs` (batch first) through `run` in batches and concatenate the outputs.

    A batch smaller than `min_batch` (a model with a fixed batch dimension) is padded by
    repeating its last slice, and the padded rows are dropped from the outputs.
    """
    counts = {name: a.shape[0] for name, a in inputs.items()}
    if len(set(counts.values())) != 1:
        raise EngineRunError(f"inputs disagree on the number of slices: {counts}")
    count = next(iter(counts.values()))
    if count == 0:
        raise EngineRunError("no slices to run")
    pieces: dict[str, list[np.ndarray]] = {}
    for part in batch_slices(count, batch_size):
        batch = {name: a[part] for name, a in inputs.items()}
        real = part.stop - part.start
        if real < min_batch:
            batch = {name: _pad(a, min_batch) for name, a in batch.items()}
        outputs = run(batch)
        for name, out in outputs.items():
            if out.shape[:1] != (batch_rows(batch),):
                raise EngineRunError(
                    f"output {name!r} has {out.shape[0] if out.ndim else 0} rows for a batch of "
                    f"{batch_rows(batch)}; its first dimension must be the batch"
                )
            pieces.setdefault(name, []).append(out[:real])
    return {name: np.concatenate(parts, axis=0) for name, parts in pieces.items()}


def batch_rows(batch: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(batch.values())).shape[0])


def _pad(array: np.ndarray, rows: int) -> np.ndarray:
    missing = rows - array.shape[0]
    filler = np.repeat(array[-1:], missing, axis=0)
    return np.concatenate([array, filler], axis=0)
