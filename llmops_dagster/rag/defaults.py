"""What a RAG answer uses when nobody says otherwise: one definition for every entry point.

**The base bundle** — what answers before any champion exists: the base model (no adapter)
with :data:`DEFAULT_MODE`, :data:`DEFAULT_K` and :data:`DEFAULT_MAX_NEW_TOKENS`. The server with
no champion (``serving/wiring.py``), ``llmops-dagster ask --bundle base`` with its flags unset,
a ``RetrievalSettings()`` / ``RagPipeline`` / ``build_rag_pipeline`` without explicit values and
the library's ``answer()`` / ``answer_many()`` all read these, so "the base model" answers the
same everywhere. (Before, the library functions defaulted to k=5 and 128 tokens while the
server and ``ask`` used 3 and 96: the same base model answered differently by entry point.)

One difference stays, on purpose — :data:`EVALUATION_MAX_NEW_TOKENS`: ``rag_evaluation``'s
answer budget (``EvaluationConfig.max_new_tokens``) is shorter because an evaluation generates
for every golden case *twice* (candidate and baseline) on CPU, and the reference answers it is
scored against are one sentence (12 words on average in the golden set, 28 at most): the budget
is the 90th percentile of the shipped golden references' lengths in the default generator's
tokens (26; ``tests/unit/test_rag_defaults.py`` recomputes it, ``benchmarks/generation.py``
measures what it saves). Both sides of a comparison use the same budget, and a bundle pins
the budget it was evaluated with (serving it with more tokens would serve something other
than what passed), so a run that wants longer served answers sets ``max_new_tokens`` in its
run config. The evaluation's ``k`` and ``mode``
are the base bundle's.
"""

from __future__ import annotations

#: Search mode (a ``search.retriever.SearchMode`` value; rag does not import the search layer).
DEFAULT_MODE = "hybrid_rrf"
#: Chunks put into the prompt.
DEFAULT_K = 3
#: Longest answer, in generated tokens.
DEFAULT_MAX_NEW_TOKENS = 96
#: ``rag_evaluation``'s answer budget (see the module docstring for why it differs).
EVALUATION_MAX_NEW_TOKENS = 26
