"""Stand-ins for what needs a live service, built from the product's own types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops_dagster.models.spec import GeneratorPin
from llmops_dagster.rag.bundle import RagBundle
from llmops_dagster.search.retriever import Hit


def hit(
    chunk_id: str,
    doc_id: str,
    text: str,
    title: str = "",
    score: float = 0.0,
    *,
    mode: str = "hybrid_rrf",
    **fields: Any,
) -> Hit:
    """A retrieved chunk as the retriever returns it (the real :class:`Hit`), for tests that
    answer from given passages instead of a live index. ``fields``: the optional ones
    (``knn_score``, ``metadata`` …)."""
    return Hit(chunk_id, doc_id, text, title, score, mode, **fields)


class StubRetriever:
    """The ``rag.answer.Retriever`` protocol over given hits: the first ``k`` of ``hits``, or of
    ``hits[query]`` when they are given per question. Records each search as (query, mode, k)."""

    def __init__(self, hits: Sequence[Hit] | Mapping[str, Sequence[Hit]]) -> None:
        self.hits = hits
        self.calls: list[tuple[str, str, int]] = []

    @property
    def ks(self) -> list[int]:
        """The depth of each search, in order."""
        return [k for _, _, k in self.calls]

    def search(
        self, query: str, *, mode: str = "hybrid_rrf", k: int = 5, **access: object
    ) -> list[Hit]:
        self.calls.append((query, mode, k))
        hits = self.hits[query] if isinstance(self.hits, Mapping) else self.hits
        return list(hits[:k])


#: The generator of an extractive bundle (no model: the builtin answerer).
EXTRACTIVE_PIN = GeneratorPin("builtin", "extractive:v1")


def rag_bundle(pin: GeneratorPin = EXTRACTIVE_PIN, **fields: Any) -> RagBundle:
    """A valid bundle whose generator is ``pin`` (extractive unless given), with the project's
    usual retrieval and index settings; ``fields`` overrides any of them."""
    defaults: dict[str, Any] = {
        "adapter_uri": None,
        "prompt_uri": "prompts:/rag_answer/1",
        "prompt_version": "0123456789ab",
        "retrieval_mode": "hybrid_rrf",
        "retrieval_k": 3,
        "max_new_tokens": 32,
        "embedding_model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "index_name": "llmops-chunks-v1",
        "index_alias": "llmops-chunks",
    }
    return RagBundle(**{**RagBundle.generator_fields(pin), **defaults, **fields})


@dataclass
class StubAnswer:
    """What evaluation reads from an answer (``evaluate.run.AnswerLike``): the text, the
    chunks the prompt got, the deeper ranking metrics read (default: the same chunks)."""

    text: str
    retrieved: list[Hit] = field(default_factory=list)
    ranked: list[Hit] = field(default_factory=list)
    total_ms: float = 10.0

    @property
    def ranked_doc_ids(self) -> list[str]:
        return [h.doc_id for h in self.ranked or self.retrieved]


class ChatMLTokenizer:
    """A stand-in with SmolLM2's chat template and a whitespace 'tokenizer' (no model loaded)."""

    eos_token = "<|im_end|>"

    def apply_chat_template(
        self, conversation: Any, tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [len(word) for word in text.split()]}
