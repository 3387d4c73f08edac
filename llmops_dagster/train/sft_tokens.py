"""Supervised fine-tuning examples as token ids, with a completion-only loss.

Why completion-only: the loss should teach the answer, not the prompt (system text, fenced
context, question) the model is given; :func:`tokenize_example` masks the prompt's tokens with
-100, which is the one thing TRL's ``SFTTrainer`` would add over plain ``Trainer`` (see
:mod:`llmops_dagster.train.lora`). :class:`CompletionCollator` pads a batch and counts the real
tokens, so throughput is measured the same way in training and in the benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmops_dagster.train.dataset import SFTExample

if TYPE_CHECKING:
    import torch

#: Prompt tokens kept from the start (the system text) when a prompt must be cut to fit.
_HEAD_TOKENS = 64


def tokenize_example(tokenizer: Any, example: SFTExample, max_seq_len: int) -> dict[str, list[int]]:
    """``input_ids`` = prompt + completion; ``labels`` mask the prompt with -100.

    When too long, the completion keeps at most half the window and the prompt loses its
    middle (the start of the context), keeping the system text's head and the question at the
    end — the parts that matter for what to answer.
    """
    prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids[: max(1, max_seq_len // 2)]
    room = max_seq_len - len(completion_ids)
    if len(prompt_ids) > room:
        head = min(_HEAD_TOKENS, room // 4)
        prompt_ids = prompt_ids[:head] + prompt_ids[len(prompt_ids) - (room - head) :]
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [-100] * len(prompt_ids) + completion_ids,
    }


class CompletionCollator:
    """Right-pads a batch; padding is masked in ``attention_mask`` and ``labels``.

    Counts the real (non-pad) tokens it hands out while ``counting`` is on, which is how
    throughput is measured identically here and in the benchmark's plain loop.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id
        self.counting = False
        self.tokens = 0

    def __call__(self, features: Sequence[Mapping[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids, labels, attention = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            input_ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [-100] * pad)
            attention.append([1] * len(f["input_ids"]) + [0] * pad)
        if self.counting:
            self.tokens += sum(len(f["input_ids"]) for f in features)
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(attention, dtype=torch.long),
        }


def tokenize_split(
    tokenizer: Any, examples: Sequence[SFTExample], max_seq_len: int
) -> list[dict[str, list[int]]]:
    return [tokenize_example(tokenizer, ex, max_seq_len) for ex in examples]
