"""PLACEHOLDER of this branch only (shadow index work): ``embedding_finetune`` is built in
another branch (assets + ``llmops_dagster/embed/finetune.py``). It exists here so that
``shadow_index``'s input resolves; the merge replaces it with the real asset. DELETE ON MERGE."""

import dagster as dg

from llmops_dagster.embed.finetune import FinetunedEmbedding


@dg.asset(group_name="train", owners=["team:ml-platform"])
def embedding_finetune() -> FinetunedEmbedding:
    """Placeholder: the fine-tuning of the embedding model lands in another branch."""
    raise dg.Failure("embedding_finetune is not built in this branch (placeholder)")
