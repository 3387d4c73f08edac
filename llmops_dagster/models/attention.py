"""Grouped-query attention on CPU without copying the KV cache: the same bits, less work.

Why: SmolLM2 (like Llama) has 9 query heads sharing 3 key/value heads. transformers' ``sdpa``
path hands SDPA grouped heads natively (``enable_gqa``) only when there is no attention mask,
a condition written for CUDA kernels; otherwise it first copies every layer's keys and values
three times over (``repeat_kv``). Generation always has a mask here (left padding, the prefix
cache's ``[prefix][padding][suffix]`` rows), so every decoding step copied the whole KV cache
of every layer: for a batch of 8 RAG prompts that copy, not the model, was the largest cost of
a step. Torch's CPU SDPA kernel reads the shared heads in place, and its result is bit-for-bit
the one it gives on the copied heads (``tests/unit/test_attention.py``): greedy answers do not
change, so this is a speed setting, no part of a bundle's generator pin.

Only inference on CPU takes this path; training (gradients on), other devices, dropout and
anything unusual go to transformers' own ``sdpa`` function unchanged.
"""

from __future__ import annotations

from typing import Any

#: The attention implementation name local generators are loaded with.
GQA_SDPA = "sdpa_cpu_gqa"

_registered = False


def sdpa_cpu_gqa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' ``sdpa`` attention, with grouped heads passed to SDPA as they are on CPU."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if (
        groups <= 1
        or query.device.type != "cpu"
        or dropout
        or torch.is_grad_enabled()
        or kwargs.get("position_bias") is not None
        or kwargs.get("output_attentions", False)
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    q_length = query.shape[2]
    # The causal flag and the crop are transformers' own rules (sdpa_attention_forward), kept
    # identical so that the kernel sees exactly the arguments it saw before.
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_length > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > q_length:
        key, value = key[:, :, :q_length, :], value[:, :, :q_length, :]
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=0.0,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return output.transpose(1, 2).contiguous(), None


def register_gqa_attention() -> str:
    """Register :data:`GQA_SDPA` with transformers (attention and its ``sdpa`` mask); idempotent."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import sdpa_mask

        AttentionInterface.register(GQA_SDPA, sdpa_cpu_gqa_attention)
        AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
        _registered = True
    return GQA_SDPA


def use_gqa_attention(model: Any) -> None:
    """Switch a loaded causal LM from ``sdpa`` to :data:`GQA_SDPA` (other implementations are
    left alone: ``eager`` or a flash kernel was chosen on purpose)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    model.set_attn_implementation(register_gqa_attention())
