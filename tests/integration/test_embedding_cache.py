from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pytest

from llmops_dagster.config import Settings
from llmops_dagster.embed.cache import embed_missing, load_vectors
from llmops_dagster.embed.model import Embedder, load_embedder

pytestmark = pytest.mark.integration

TEXTS = [
    ("h1", "Swap the battery within 90 seconds."),
    ("h2", "Expense reports are due on the 5th."),
    ("h3", "The on-call rotation changes on Monday."),
    ("h4", "Lost link: the drone returns to the depot."),
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(Settings().models.embedding_model)


def test_each_text_is_embedded_once_per_model(embedder: Embedder) -> None:
    con = duckdb.connect()
    first = embed_missing(con, embedder, [*TEXTS, ("h1", TEXTS[0][1])])
    assert (first.requested, first.embedded, first.cached) == (4, 4, 0)
    assert first.dims == 384

    second = embed_missing(con, embedder, [*TEXTS, ("h5", "A new sentence about drones.")])
    assert (second.requested, second.embedded, second.cached) == (5, 1, 4)

    vectors = load_vectors(con, embedder.model_id, ["h1", "h2", "missing"])
    assert set(vectors) == {"h1", "h2"}
    direct = embedder.encode([TEXTS[0][1]])[0]
    assert np.allclose(vectors["h1"], direct, atol=1e-6)
    assert np.linalg.norm(vectors["h2"]) == pytest.approx(1.0, abs=1e-5)

    # Another model id is another key space: nothing is reused across models.
    other = dataclasses.replace(embedder, model_id="another/model")
    third = embed_missing(con, other, TEXTS)
    assert third.embedded == 4


def test_an_interrupted_run_keeps_what_it_embedded(embedder: Embedder) -> None:
    con = duckdb.connect()

    def stop_after_first_block(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_missing(con, embedder, TEXTS, write_every=2, progress=stop_after_first_block)
    resumed = embed_missing(con, embedder, TEXTS, write_every=2)
    assert (resumed.cached, resumed.embedded) == (2, 2)
