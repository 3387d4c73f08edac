"""Retrieval-augmented generation: versioned prompts and ``answer(question)``.

Dagster-free. The language models behind the answers live in :mod:`llmops_dagster.models`
(torch/transformers are imported only when a local model is loaded).
"""
