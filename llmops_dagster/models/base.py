"""What every generator backend returns and promises (the RAG, evaluation and judge use this)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Message = Mapping[str, str]
Messages = Sequence[Message]
#: A prompt is raw text (sent as is) or chat messages (rendered with the model's template).
PromptInput = str | Messages


class GeneratorError(RuntimeError):
    """Base class: a generator cannot be built or cannot answer."""


class GeneratorConfigError(GeneratorError):
    """Bad configuration (unknown model path, missing GGUF file); names the setting to fix."""


class EndpointUnavailable(GeneratorError):
    """The OpenAI-compatible endpoint cannot be reached or rejected the request."""


class AdapterMismatchError(GeneratorError):
    """A LoRA adapter was trained on another base model than the configured one."""


@dataclass(frozen=True)
class Generation:
    """One completion. ``seconds`` is the wall time of the call (batch) that produced it:
    the latency a caller of that batch waited, not a share of it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str | None = None


def is_messages(prompt: PromptInput) -> bool:
    return not isinstance(prompt, str)


@runtime_checkable
class Generator(Protocol):
    """What the RAG and evaluation code needs from any LLM backend."""

    @property
    def model_id(self) -> str: ...

    def apply_chat_template(self, messages: Messages) -> str:
        """The exact text the model sees for ``messages`` (generation prompt included)."""
        ...

    def generate(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> list[Generation]: ...
