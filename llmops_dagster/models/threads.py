"""torch's intra-op thread count, lent for a block of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the block (process-wide), then restored.

    Process-wide because torch's thread count is: callers hold the work alone while they lend
    it (the model's lock for side-by-side batches, the evaluation pool for a training).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
