"""The KV cache of a shared prompt prefix, computed once and reused for every prompt after it.

Why: RAG prompts begin with the same system message and instructions (~110 SmolLM2 tokens of
the ``rag_answer`` template) before the per-question context. A decoder's keys and values at a
position depend only on the tokens up to it, so the cache of that common prefix is the same
for every prompt that starts with it: computing it once and generating each prompt from a copy
gives the same greedy tokens while every prompt's prefill skips the prefix.

The prefix is found in *token ids*, never in text: the longest common prefix of the prompts'
own tokenizations is, by construction, what each of them feeds the model. It always stops at
least one token before the shortest prompt ends (``generate`` needs one uncached input token to
produce the first logits), and is used only from :data:`MIN_PREFIX_TOKENS` tokens on.

With one prompt per call (serving, a batch size of 1) there is no second prompt to compare
with: :class:`PrefixCacheStore` remembers the last prompt it saw and the prefixes it computed,
so the second single prompt already finds the template's prefix. Batched rows are laid out
``[prefix][padding][suffix]`` (the padding masked out): each row's positions are counted over
its unmasked tokens, exactly as with left padding (``generate`` derives positions from the
attention mask), so a row sees the same positions and tokens either way.

Torch and transformers are imported when a cache is built (this module is light to import).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

#: Shorter common prefixes are not cached: the saved prefill would not pay for the copy.
MIN_PREFIX_TOKENS = 16
#: Prefixes kept per store (least recently used dropped first).
MAX_PREFIXES = 8


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all ``sequences`` share (0 for none, or no sequences)."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for i in range(shortest):
        token = first[i]
        if any(s[i] != token for s in sequences[1:]):
            return i
    return shortest


def usable_prefix_length(
    sequences: Sequence[Sequence[int]], prefix_length: int, *, minimum: int = MIN_PREFIX_TOKENS
) -> int:
    """``prefix_length`` cut so that every sequence keeps at least one token after it; 0 when
    what is left is shorter than ``minimum`` (not worth caching)."""
    if not sequences:
        return 0
    length = min(prefix_length, min(len(s) for s in sequences) - 1)
    return length if length >= max(1, minimum) else 0


class PrefixCacheStore:
    """Prefix KV caches of one model, keyed by the prefix's token ids.

    Not thread-safe on its own: the generator calls it under its model's lock (the same lock
    that serialises ``generate``).
    """

    def __init__(
        self,
        model: Any,
        device: str,
        *,
        minimum: int = MIN_PREFIX_TOKENS,
        max_prefixes: int = MAX_PREFIXES,
    ) -> None:
        self._model = model
        self._device = device
        self.minimum = minimum
        self.max_prefixes = max(1, max_prefixes)
        self._caches: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._last_prompt: tuple[int, ...] | None = None
        #: Prefix caches computed / reused (what a benchmark or a test reads).
        self.built = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._caches)

    def prefix_for(self, sequences: Sequence[Sequence[int]]) -> tuple[int, ...]:
        """The prefix to generate ``sequences`` from (``()``: none worth caching).

        Several prompts: their longest common prefix. One prompt: the longest stored prefix it
        starts with, else its common prefix with the previous single prompt (so a stream of
        single questions on one template finds the template's prefix from the second on).
        """
        if not sequences:
            return ()
        if len(sequences) > 1:
            length = common_prefix_length(sequences)
        else:
            (only,) = sequences
            stored = [p for p in self._caches if len(p) < len(only) and tuple(only[: len(p)]) == p]
            if stored:
                return max(stored, key=len)
            previous = self._last_prompt
            self._last_prompt = tuple(only)
            length = common_prefix_length([only, previous]) if previous is not None else 0
        length = usable_prefix_length(sequences, length, minimum=self.minimum)
        return tuple(sequences[0][:length])

    def cache_for(self, prefix: tuple[int, ...], batch_size: int) -> Any:
        """A fresh copy of ``prefix``'s KV cache (computed on first use), repeated for
        ``batch_size`` rows: ``generate`` extends the cache it is given, so the stored one is
        never handed out."""
        cached = self._caches.get(prefix)
        if cached is None:
            cached = self._build(prefix)
            self._caches[prefix] = cached
            self.built += 1
            while len(self._caches) > self.max_prefixes:
                self._caches.popitem(last=False)
        else:
            self._caches.move_to_end(prefix)
            self.hits += 1
        cache = copy.deepcopy(cached)
        if batch_size > 1:
            cache.batch_repeat_interleave(batch_size)
        return cache

    def _build(self, prefix: tuple[int, ...]) -> Any:
        import torch
        from transformers import DynamicCache

        model = self._model
        cache = DynamicCache(config=model.config)
        input_ids = torch.tensor([list(prefix)], dtype=torch.long, device=self._device)
        with torch.inference_mode():
            model(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=cache,
                use_cache=True,
            )
        return cache
