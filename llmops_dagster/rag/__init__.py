"""Retrieval-augmented generation: versioned prompts, LLM backends, ``answer(question)``.

Dagster-free; import the submodules (``rag.llm`` pulls torch/transformers only when a local
model is loaded).
"""
