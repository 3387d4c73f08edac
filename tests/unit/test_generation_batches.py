"""How the local generator cuts a call into batches and lends them torch's threads."""

from __future__ import annotations

import pytest
import torch

from llmops_dagster.models.local import batch_width
from llmops_dagster.models.threads import torch_threads

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("count", "workers", "expected"),
    [
        (1, 2, 1),  # a single request: one batch (it then runs on every thread)
        (8, 2, 4),  # one full batch becomes two side by side
        (20, 2, 5),  # 3 batches of at most 8 -> 4 of 5
        (24, 2, 6),  # 3 of 8 -> 4 of 6
        (32, 2, 8),  # 4 of 8 already pair up
        (24, 1, 8),  # one at a time: full batches
        (9, 1, 5),  # one at a time: 2 even batches, not 8 + 1
        (3, 4, 1),  # more workers than prompts: one prompt a batch
    ],
)
def test_batch_width_is_at_most_the_batch_size_and_gives_every_worker_the_same_count(
    count: int, workers: int, expected: int
) -> None:
    width = batch_width(count, 8, workers)
    assert width == expected
    batches = -(-count // width)
    assert width <= 8
    assert batches % workers == 0 or batches == count


def test_torch_threads_are_given_back_after_the_block_even_when_it_raises() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
