"""A tiny in-memory slice pool for training tests (no phantom rendering)."""

from __future__ import annotations

from collections import deque

import numpy as np

from dicomnode.training.data import SlicePool, StudySlices


def tiny_pool(size: int = 32) -> SlicePool:
    """A pool of synthetic slices with a bright square 'lesion' whose target is the background."""
    rng = np.random.default_rng(0)
    pool = SlicePool(seed=0, capacity=4)
    target = (0.3 + 0.05 * rng.random((4, size, size))).astype(np.float16)
    inputs = target.copy()
    masks = np.zeros(target.shape, dtype=bool)
    masks[:, 10:18, 12:20] = True
    inputs[masks] = 0.8
    pool.studies = deque([StudySlices(inputs, target, masks, "ich")], maxlen=4)
    return pool
