"""The value of the ``embedding_finetune`` asset (placeholder until the fine-tuning lands: only
the dataclass of the shared contract)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FinetunedEmbedding:
    """A fine-tuned sentence-transformers folder under ``<models cache>/embedding/<name>/``."""

    model_id: str
    path: str
    base_model_id: str
    registered_name: str
    version: str
    data_digest: str
    run_id: str
    examples: int
    steps: int
    seconds: float
