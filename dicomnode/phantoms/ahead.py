"""Phantoms rendered ahead in worker processes, while the caller runs a model on earlier ones.

A phantom depends on its arguments only, so rendering ahead gives the same studies in the same
order as rendering in the caller's process, whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Any, TypeVar

from dicomnode.phantoms.template import load_anatomy

T = TypeVar("T")


def rendered_ahead(render: Callable[..., T], jobs: Iterable[Mapping[str, Any]],
                   workers: int) -> Generator[T, None, None]:
    """`render(**job)` for each job, in order, with up to 2 x `workers` jobs rendering ahead.

    `render` must be a module-level function (it is sent to other processes). `jobs` may be
    endless and is read only as results are taken. Closing the iterator stops the workers and
    drops the renders not yet taken.
    """
    load_anatomy()  # build the cache once, before the workers read it
    # A clean server process, not a fork of this one: the caller's inference or training
    # threads (and CUDA) make forking it unsafe.
    context = multiprocessing.get_context("forkserver")
    executor = ProcessPoolExecutor(workers, mp_context=context)
    pending = iter(jobs)
    try:
        first = islice(pending, 2 * workers)
        ahead: deque[Future[T]] = deque(executor.submit(render, **job) for job in first)
        while ahead:
            result = ahead.popleft().result()
            following = next(pending, None)
            if following is not None:
                ahead.append(executor.submit(render, **following))
            yield result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
