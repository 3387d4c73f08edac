"""Grouped-query attention on CPU (``models/attention.py``): the same bits as transformers' own
``sdpa`` function, which copies the shared key/value heads first whenever there is a mask."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from llmops_dagster.models.attention import GQA_SDPA, register_gqa_attention, sdpa_cpu_gqa_attention

BATCH, HEADS, KV_HEADS, HEAD_DIM = 3, 9, 3, 64


def _module() -> SimpleNamespace:
    # What the two functions read from a Llama attention module.
    return SimpleNamespace(num_key_value_groups=HEADS // KV_HEADS, is_causal=True)


def _inputs(q_length: int, kv_length: int, *, masked: bool) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(q_length * 1000 + kv_length)
    query = torch.randn(BATCH, HEADS, q_length, HEAD_DIM, generator=generator)
    key = torch.randn(BATCH, KV_HEADS, kv_length, HEAD_DIM, generator=generator)
    value = torch.randn(BATCH, KV_HEADS, kv_length, HEAD_DIM, generator=generator)
    if not masked:
        return query, key, value, None
    # [prefix][padding][suffix] rows, causal over the last q_length positions: the layout the
    # prefix cache gives a padded batch (row 0 unpadded, rows 1 and 2 with 5 and 11 pads).
    causal = torch.ones(q_length, kv_length, dtype=torch.bool).tril(kv_length - q_length)
    mask = causal.expand(BATCH, 1, q_length, kv_length).clone()
    for row, pads in ((1, 5), (2, 11)):
        mask[row, :, :, 20 : 20 + pads] = False
    return query, key, value, mask


@pytest.mark.parametrize(
    ("q_length", "kv_length", "masked"),
    [(1, 300, True), (40, 300, True), (1, 1, True), (64, 64, False), (7, 90, False)],
    ids=["decode-step", "prefill-after-prefix", "first-token", "causal-no-mask", "no-mask-crop"],
)
def test_gqa_attention_is_bit_identical_to_transformers_sdpa(
    q_length: int, kv_length: int, masked: bool
) -> None:
    query, key, value, mask = _inputs(q_length, kv_length, masked=masked)
    module = _module()
    with torch.inference_mode():
        expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.125)
        got, _ = sdpa_cpu_gqa_attention(module, query, key, value, mask, scaling=0.125)
    assert got.shape == (BATCH, q_length, HEADS, HEAD_DIM)
    assert torch.equal(got, expected)


def test_with_gradients_on_the_call_is_transformers_own_sdpa() -> None:
    query, key, value, mask = _inputs(5, 30, masked=True)
    query.requires_grad_(True)
    module = _module()
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.125)
    got, _ = sdpa_cpu_gqa_attention(module, query, key, value, mask, scaling=0.125)
    assert torch.equal(got, expected)
    got.sum().backward()  # training works through it
    assert query.grad is not None and query.grad.shape == query.shape


def test_registration_is_idempotent_and_names_the_attention_and_its_mask() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    assert register_gqa_attention() == register_gqa_attention() == GQA_SDPA
    assert AttentionInterface._global_mapping[GQA_SDPA] is sdpa_cpu_gqa_attention
    assert AttentionMaskInterface._global_mapping[GQA_SDPA] is sdpa_mask


def test_length_order_is_shortest_first_and_keeps_ties_in_the_callers_order() -> None:
    from llmops_dagster.models.local import length_order

    rows = [[1, 2, 3], [1], [4, 5], [6], [7, 8, 9]]
    assert length_order(rows) == [1, 3, 2, 0, 4]
    assert length_order([]) == []
