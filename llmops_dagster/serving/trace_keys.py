"""Names the server writes on every answer's MLflow trace, and the loaders read back.

Trace *metadata* (immutable, set when the trace is created) holds what the serving metrics and
the lineage walk need, so neither has to parse spans. Values are strings (MLflow's rule).
"""

from __future__ import annotations

PREFIX = "llmops."
BUNDLE_URI = "llmops.bundle_uri"  # models:/llmops-rag-bundle/3, "" when the base model served
BUNDLE_VERSION = "llmops.bundle_version"  # "3", "" for the base model
PROMPT_VERSION = "llmops.prompt_version"  # rag_answer@<content hash>
PROMPT_URI = "llmops.prompt_uri"  # prompts:/rag_answer/2 (bundles only)
MODEL_ID = "llmops.model_id"
ADAPTER_URI = "llmops.adapter_uri"
INDEX_ALIAS = "llmops.index_alias"
INDEX_NAME = "llmops.index_name"  # the physical index behind the alias when answered
EMBEDDING_MODEL = "llmops.embedding_model_id"
RETRIEVAL_MODE = "llmops.retrieval_mode"
RETRIEVAL_K = "llmops.retrieval_k"
PROMPT_TOKENS = "llmops.prompt_tokens"
COMPLETION_TOKENS = "llmops.completion_tokens"
COST_USD = "llmops.cost_usd"
TOP_SCORE = "llmops.top_score"  # "" when nothing was retrieved
NO_HIT = "llmops.no_hit"  # "true" / "false"
CITED_CHUNK_IDS = "llmops.cited_chunk_ids"  # JSON list
RETRIEVED_CHUNK_IDS = "llmops.retrieved_chunk_ids"  # JSON list, rank order
# JSON list, rank order; a JSON string "[withheld: audience …]" on restricted answers
RETRIEVED_DOC_IDS = "llmops.retrieved_doc_ids"
TOTAL_MS = "llmops.total_ms"
QUEUE_MS = "llmops.queue_ms"
USER = "llmops.user"  # the principal's name (an API key's name; never the key)
GROUPS = "llmops.groups"  # JSON list: the audiences the caller could read
# JSON list: who may read the answer (serving.disclosure): ["public"], or every group its text
# came through (asker and retrieved passages); restricted answers keep no text in the trace.
AUDIENCE = "llmops.audience"
RESTRICTED = "llmops.restricted"  # "true" / "false": text withheld from this trace
INJECTION_FLAGS = "llmops.injection_flags"  # JSON list of rules the question tripped
CHUNK_INJECTION_FLAGS = "llmops.chunk_injection_flags"  # JSON {chunk id: [rules]}
REFUSED = "llmops.refused"  # "", "prompt_injection" or "nothing_relevant"
REDACTED = "llmops.answer_redacted"  # JSON {PII kind: count} removed from the answer
# "true" / "false": replayed from the server's answer cache (serving.answer_cache), nothing
# retrieved or generated; then CACHE_SOURCE_TRACE names the trace of the answer it replays.
CACHE_HIT = "llmops.cache_hit"
CACHE_SOURCE_TRACE = "llmops.cache_source_trace_id"

# Trace tags (mutable, searchable in the UI): what a person filters traces by.
TAG_BUNDLE_VERSION = "bundle_version"
TAG_SOURCE = "source"  # "serve"
TAG_AUDIENCE = "audience"  # "public" or the comma-separated groups of llmops.audience
ROLLOUT = "llmops.rollout"  # "shadow": a challenger's answer never returned to the caller
TAG_ROLLOUT = "rollout"  # "champion", "challenger" (a rollout split) or "shadow"
TAG_CACHE = "cache"  # "hit", "miss", or "bypass" (cache off, sampling bundle, flagged question)

# Assessment names used for user feedback on a trace.
FEEDBACK_RATING = "user_rating"  # bool: thumbs up
EXPECTED_ANSWER = "expected_answer"  # the user's correction
