"""The server's own record of what it answered and what users said about it (SQLite).

Why a local store next to MLflow's traces: an answer must be acknowledged, and feedback on it
accepted, even while the tracking store is down (traces are then dropped and counted, see
:mod:`llmops_dagster.serving.tracing`), so the answer log is written on the request path to a
file the server owns. Rows are small and keyed by the trace id MLflow gave the answer; Dagster
loads both tables incrementally (``updated_at`` cursors) into the warehouse.

One connection per call (SQLite connections are cheap; WAL lets the Dagster loader read while
the server writes); ``check_same_thread`` is irrelevant because connections never cross threads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from llmops_dagster.serving.disclosure import audience_from_row

Rating = Literal["up", "down"]
FeedbackChange = Literal["created", "updated", "unchanged"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    trace_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    bundle_uri TEXT,
    bundle_version TEXT,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    cited_chunk_ids TEXT NOT NULL,
    retrieved TEXT NOT NULL,
    top_score REAL,
    no_hit INTEGER NOT NULL,
    total_ms REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL,
    asker_groups TEXT NOT NULL DEFAULT '[]',
    audience TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    citations_inferred INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS feedback (
    trace_id TEXT NOT NULL REFERENCES answers(trace_id),
    user_id TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    correction TEXT,
    comment TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (trace_id, user_id)
);
CREATE INDEX IF NOT EXISTS feedback_updated ON feedback(updated_at);
CREATE INDEX IF NOT EXISTS answers_created ON answers(created_at);
"""


class UnknownTrace(LookupError):
    """Feedback names a trace id this server never answered."""


def now_iso() -> str:
    # Microseconds and a fixed offset: ISO strings then sort like the instants they name,
    # which the incremental loaders' cursors rely on.
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class ServedChunk:
    chunk_id: str
    doc_id: str
    title: str
    score: float


@dataclass(frozen=True)
class AnswerRecord:
    trace_id: str
    question: str
    answer: str
    cited_chunk_ids: list[str]
    retrieved: list[ServedChunk]
    bundle_uri: str | None
    bundle_version: str | None
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: a remote model missing from the price table
    #: The asker's groups (not "public"): an accepted golden item is asked with the same ones.
    asker_groups: list[str] = field(default_factory=list)
    #: Who may read it (:mod:`llmops_dagster.serving.disclosure`); None: derived from
    #: ``asker_groups`` (rows of servers from before the audience was recorded).
    audience: list[str] | None = None
    created_at: str = field(default_factory=now_iso)
    #: Replayed from the answer cache (:mod:`llmops_dagster.serving.answer_cache`): nothing was
    #: retrieved or generated for it (its tokens and cost are 0).
    cache_hit: bool = False
    #: The model cited no retrieved chunk itself; the citations were inferred from word
    #: overlap (``rag/citations.py``) and say nothing about whether it used its sources.
    citations_inferred: bool = False

    @property
    def top_score(self) -> float | None:
        return max((c.score for c in self.retrieved), default=None)

    @property
    def no_hit(self) -> bool:
        return not self.retrieved


@dataclass(frozen=True)
class FeedbackRecord:
    trace_id: str
    user_id: str
    rating: Rating
    correction: str | None
    comment: str | None
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServingStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            columns = {r["name"] for r in conn.execute("PRAGMA table_info(answers)")}
            if "audience" not in columns:  # a store written before audiences were recorded
                conn.execute("ALTER TABLE answers ADD COLUMN audience TEXT")
            if "cache_hit" not in columns:  # written before the answer cache: all misses
                conn.execute("ALTER TABLE answers ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0")
            if "citations_inferred" not in columns:  # written before it was recorded: model-made
                conn.execute(
                    "ALTER TABLE answers ADD COLUMN citations_inferred INTEGER NOT NULL DEFAULT 0"
                )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:  # commit on success, roll back on error
                yield conn
        finally:
            conn.close()

    # --- answers ---------------------------------------------------------------------------
    def record_answer(self, record: AnswerRecord) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO answers (trace_id, created_at, bundle_uri, bundle_version, question,"
                " answer, cited_chunk_ids, retrieved, top_score, no_hit, total_ms, prompt_tokens,"
                " completion_tokens, cost_usd, asker_groups, audience, cache_hit,"
                " citations_inferred)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.trace_id,
                    record.created_at,
                    record.bundle_uri,
                    record.bundle_version,
                    record.question,
                    record.answer,
                    json.dumps(record.cited_chunk_ids),
                    json.dumps([asdict(c) for c in record.retrieved]),
                    record.top_score,
                    int(record.no_hit),
                    record.total_ms,
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.cost_usd,
                    json.dumps(sorted(record.asker_groups)),
                    None if record.audience is None else json.dumps(sorted(record.audience)),
                    int(record.cache_hit),
                    int(record.citations_inferred),
                ),
            )

    def answer(self, trace_id: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM answers WHERE trace_id = ?", (trace_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["cited_chunk_ids"] = json.loads(out["cited_chunk_ids"])
        out["retrieved"] = json.loads(out["retrieved"])
        out["asker_groups"] = json.loads(out["asker_groups"])
        out["audience"] = audience_from_row(
            json.loads(out["audience"]) if out.get("audience") else None, out["asker_groups"]
        )
        out["no_hit"] = bool(out["no_hit"])
        out["cache_hit"] = bool(out["cache_hit"])
        out["citations_inferred"] = bool(out["citations_inferred"])
        return out

    def audiences(self, trace_ids: Sequence[str]) -> dict[str, list[str]]:
        """trace id → who may read that answer (ids this store never answered are absent)."""
        wanted = sorted(set(trace_ids))
        found: dict[str, list[str]] = {}
        with self._connect() as conn:
            for start in range(0, len(wanted), 500):  # SQLite's bound-variable limit
                part = wanted[start : start + 500]
                rows = conn.execute(
                    "SELECT trace_id, asker_groups, audience FROM answers WHERE trace_id IN"
                    f" ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
                for row in rows:
                    stored = json.loads(row["audience"]) if row["audience"] else None
                    found[row["trace_id"]] = audience_from_row(
                        stored, json.loads(row["asker_groups"])
                    )
        return found

    def answers_since(self, created_after: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT trace_id FROM answers WHERE created_at > ? ORDER BY created_at",
                (created_after or "",),
            ).fetchall()
        return [self.answer(r["trace_id"]) for r in rows]  # type: ignore[misc]

    def count_answers(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT count(*) FROM answers").fetchone()[0])

    # --- feedback --------------------------------------------------------------------------
    def record_feedback(
        self,
        trace_id: str,
        user_id: str,
        rating: Rating,
        correction: str | None = None,
        comment: str | None = None,
    ) -> tuple[FeedbackRecord, FeedbackChange]:
        """Upsert the feedback of ``user_id`` on ``trace_id``; ``(record, change)``.

        Idempotent per (trace, user): sending the same feedback again changes nothing but
        ``updated_at``; sending a different one replaces it (the latest opinion counts).
        """
        if rating not in ("up", "down"):
            raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
        stamp = now_iso()
        with self._connect() as conn:
            if (
                conn.execute("SELECT 1 FROM answers WHERE trace_id = ?", (trace_id,)).fetchone()
                is None
            ):
                raise UnknownTrace(trace_id)
            existing = conn.execute(
                "SELECT * FROM feedback WHERE trace_id = ? AND user_id = ?", (trace_id, user_id)
            ).fetchone()
            if existing is not None and (
                existing["rating"],
                existing["correction"],
                existing["comment"],
            ) == (rating, correction, comment):
                return FeedbackRecord(**dict(existing)), "unchanged"
            conn.execute(
                "INSERT INTO feedback (trace_id, user_id, rating, correction, comment, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (trace_id, user_id) DO UPDATE SET"
                " rating = excluded.rating, correction = excluded.correction,"
                " comment = excluded.comment, updated_at = excluded.updated_at",
                (trace_id, user_id, rating, correction, comment, stamp, stamp),
            )
            row = conn.execute(
                "SELECT * FROM feedback WHERE trace_id = ? AND user_id = ?", (trace_id, user_id)
            ).fetchone()
        return FeedbackRecord(**dict(row)), "created" if existing is None else "updated"

    def feedback_for(self, trace_id: str) -> list[FeedbackRecord]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM feedback WHERE trace_id = ? ORDER BY user_id", (trace_id,)
            ).fetchall()
        return [FeedbackRecord(**dict(r)) for r in rows]

    def feedback_since(self, updated_after: str | None = None) -> list[FeedbackRecord]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM feedback WHERE updated_at > ? ORDER BY updated_at",
                (updated_after or "",),
            ).fetchall()
        return [FeedbackRecord(**dict(r)) for r in rows]


def served_chunks(rows: Sequence[Any]) -> list[ServedChunk]:
    """``RetrievedChunk``-like objects → what the answer log keeps (no chunk text)."""
    return [ServedChunk(r.chunk_id, r.doc_id, r.title or "", float(r.score)) for r in rows]
