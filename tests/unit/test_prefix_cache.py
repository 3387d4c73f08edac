"""The shared-prefix logic on token ids (``models/prefix_cache.py``), and the store's caches on a
tiny randomly initialised Llama built in memory (no download; the real-model equality of greedy
answers is tests/integration/test_prefix_cache.py)."""

from __future__ import annotations

import pytest

from llmops_dagster.models.prefix_cache import (
    MIN_PREFIX_TOKENS,
    PrefixCacheStore,
    common_prefix_length,
    usable_prefix_length,
)

pytestmark = pytest.mark.unit

TEMPLATE = list(range(100, 140))  # 40 shared "system message" tokens


def test_common_prefix_length_counts_the_leading_tokens_all_sequences_share() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 7]]) == 2
    assert common_prefix_length([[5, 2], [1, 2]]) == 0
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([]) == 0


def test_a_prompt_equal_to_or_shorter_than_the_common_prefix_bounds_it() -> None:
    # [1,2,3] is a prefix of the other: the common prefix is all of it...
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4, 5]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 3
    # ...but generation needs one uncached token of the shortest prompt.
    assert usable_prefix_length([[1, 2, 3], [1, 2, 3, 4, 5]], 3, minimum=1) == 2
    assert usable_prefix_length([[1, 2, 3], [1, 2, 3]], 3, minimum=1) == 2
    assert usable_prefix_length([[1]], 1, minimum=1) == 0


def test_a_prefix_shorter_than_the_minimum_is_not_cached() -> None:
    assert usable_prefix_length([[0] * 50, [0] * 50], 15, minimum=16) == 0
    assert usable_prefix_length([[0] * 50, [0] * 50], 16, minimum=16) == 16


def test_several_prompts_share_their_common_prefix() -> None:
    store = PrefixCacheStore(model=None, device="cpu")
    prompts = [[*TEMPLATE, 1, 2, 3], [*TEMPLATE, 1, 5], [*TEMPLATE, 7]]
    assert store.prefix_for(prompts) == tuple(TEMPLATE)


def test_identical_prompts_keep_their_last_token_out_of_the_prefix() -> None:
    store = PrefixCacheStore(model=None, device="cpu")
    prompt = [*TEMPLATE, 1, 2]
    assert store.prefix_for([prompt, prompt]) == tuple(prompt[:-1])


def test_prompts_sharing_too_little_get_no_prefix() -> None:
    store = PrefixCacheStore(model=None, device="cpu")
    short = TEMPLATE[: MIN_PREFIX_TOKENS - 1]
    assert store.prefix_for([[*short, 1], [*short, 2]]) == ()


def test_single_prompts_learn_the_prefix_from_the_previous_one() -> None:
    store = PrefixCacheStore(model=None, device="cpu")
    assert store.prefix_for([[*TEMPLATE, 1, 2]]) == ()  # nothing to compare with yet
    assert store.prefix_for([[*TEMPLATE, 3, 4]]) == tuple(TEMPLATE)


@pytest.fixture(scope="module")
def tiny_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=200,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()


def test_a_stored_prefix_is_built_once_and_handed_out_as_copies(tiny_model) -> None:
    import torch

    store = PrefixCacheStore(tiny_model, "cpu")
    prefix = tuple(TEMPLATE)
    first = store.cache_for(prefix, batch_size=3)
    assert (store.built, store.hits) == (1, 0)
    assert first.get_seq_length() == len(TEMPLATE)
    assert first.layers[0].keys.shape[0] == 3  # repeated for three rows
    first.crop(5)  # what generate does to its copy must not reach the stored cache
    second = store.cache_for(prefix, batch_size=1)
    assert (store.built, store.hits) == (1, 1)
    assert second.get_seq_length() == len(TEMPLATE)

    # The stored keys are those a full forward pass computes for the same positions.
    with torch.inference_mode():
        full = tiny_model(input_ids=torch.tensor([[*TEMPLATE, 1, 2, 3]]), use_cache=True)
    expected = full.past_key_values.layers[1].keys[:, :, : len(TEMPLATE)]
    torch.testing.assert_close(second.layers[1].keys, expected)


def test_a_single_prompt_uses_the_longest_stored_prefix_it_starts_with(tiny_model) -> None:
    store = PrefixCacheStore(tiny_model, "cpu")
    store.cache_for(tuple(TEMPLATE[:20]), batch_size=1)
    store.cache_for(tuple(TEMPLATE), batch_size=1)
    assert store.prefix_for([[*TEMPLATE, 9]]) == tuple(TEMPLATE)
    assert store.prefix_for([[*TEMPLATE[:25], 9]]) == tuple(TEMPLATE[:20])


def test_the_store_keeps_the_most_recently_used_prefixes(tiny_model) -> None:
    store = PrefixCacheStore(tiny_model, "cpu", max_prefixes=2)
    a, b, c = (tuple(TEMPLATE[:n]) for n in (18, 19, 20))
    store.cache_for(a, 1)
    store.cache_for(b, 1)
    store.cache_for(a, 1)  # a used again: b is now the oldest
    store.cache_for(c, 1)
    assert len(store) == 2
    assert store.prefix_for([[*TEMPLATE, 1]]) == c
    assert store.prefix_for([[*TEMPLATE[:19], 1]]) == a  # b was dropped
