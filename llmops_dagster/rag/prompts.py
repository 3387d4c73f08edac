"""Versioned prompt templates and context fencing.

Why content-hash versions: a prompt edit changes answers as surely as a model change does, so
every answer and every evaluation records ``prompt.version`` — the first 12 hex characters of the
SHA-256 of the template file's text. Nobody has to remember to bump a number, and two
checkouts with the same text agree on the version.

Why fences: retrieved text is untrusted data. Each chunk is wrapped in
``<chunk id="ID">`` ... ``</chunk>`` lines and anything inside a chunk that looks like a chunk
tag (``<chunk``, ``</ chunk``, any case) has its ``<`` escaped to ``&lt;``, so a document cannot
close its own fence and pose as instructions or as another chunk. The system text says the
context is data, and asks for ``[chunk:ID]`` citations that :func:`parse_citations` reads back.
XML-style tags rather than e.g. ``<<<chunk id=ID>>>`` markers: measured on SmolLM2-135M, the
angle-bracket runs were echoed back as the start of most answers; the tags were not.

Template files live in ``llmops_dagster/prompts/<name>.md`` (or ``.txt``) with a ``[system]``
section and a ``[user]`` section; ``{{context}}`` and ``{{question}}`` are filled in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
DEFAULT_PROMPT = "rag_answer"

FENCE_OPEN = '<chunk id="{chunk_id}">'
FENCE_CLOSE = "</chunk>"
NO_CONTEXT = "(no context was retrieved)"

_SECTION_RE = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)
# Anything a tokenizer or a model could read as a chunk tag: "<chunk", "< /Chunk", "</chunk".
_FENCE_LOOKALIKE_RE = re.compile(r"<(?=\s*/?\s*chunk)", re.IGNORECASE)
# Chunk ids are hashes in this project, but other stores may use other ids: keep the label
# to characters that cannot end the label or open a fence.
_SAFE_ID_RE = re.compile(r"[^A-Za-z0-9_.:#/\-]")
# ``[chunk:ID]``, also tolerating ``[chunk: ID]``, ``[chunk ID]`` and ``[chunk:A, chunk:B]``.
_CITATION_BLOCK_RE = re.compile(r"\[\s*chunk\s*[:=]?\s*([^\]]+)\]", re.IGNORECASE)
_CITATION_ID_RE = re.compile(r"(?:chunk\s*[:=]?\s*)?([A-Za-z0-9_.:#/\-]+)", re.IGNORECASE)
#: A cited id shorter than this is not accepted as a prefix of a retrieved id.
MIN_CITATION_PREFIX = 8


class PromptError(ValueError):
    """A prompt template is missing or malformed."""


class ContextChunk(Protocol):
    """What a fenced chunk needs (``search.retriever.Hit`` fits)."""

    chunk_id: str
    text: str
    title: str


def prompt_version(text: str) -> str:
    """First 12 hex of the SHA-256 of the template text: the version recorded with answers."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt template: a system and a user section with ``{{...}}`` placeholders."""

    name: str
    text: str
    version: str

    @classmethod
    def from_text(cls, name: str, text: str) -> PromptTemplate:
        template = cls(name=name, text=text, version=prompt_version(text))
        template.sections()  # validate now, not at the first question
        return template

    def sections(self) -> tuple[str, str]:
        """(system, user) texts; raises :class:`PromptError` if either section is missing."""
        parts = _SECTION_RE.split(self.text)
        # split() with one group: [preamble, name1, body1, name2, body2, ...]
        found: dict[str, str] = {}
        for label, body in zip(parts[1::2], parts[2::2], strict=True):
            found[label] = body.strip()
        missing = [label for label in ("system", "user") if not found.get(label)]
        if missing:
            raise PromptError(
                f"prompt template {self.name!r} lacks a non-empty [{'] and ['.join(missing)}] "
                "section"
            )
        if "{{question}}" not in found["user"]:
            raise PromptError(f"prompt template {self.name!r}: [user] has no {{{{question}}}}")
        return found["system"], found["user"]

    def messages(self, question: str, chunks: Sequence[ContextChunk]) -> list[dict[str, str]]:
        """Chat messages for ``question`` with ``chunks`` fenced into the context."""
        system, user = self.sections()
        context = format_context(chunks)
        # Replace the question last so that a question containing "{{context}}" stays literal.
        user = user.replace("{{context}}", context).replace("{{question}}", question.strip())
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def load_prompt(name: str = DEFAULT_PROMPT, *, prompts_dir: Path | None = None) -> PromptTemplate:
    """Load ``<name>.md`` or ``<name>.txt`` from the prompts folder (or ``prompts_dir``)."""
    folder = prompts_dir or PROMPTS_DIR
    for suffix in (".md", ".txt"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return PromptTemplate.from_text(name, path.read_text(encoding="utf-8"))
    available = sorted(p.stem for p in folder.glob("*") if p.suffix in {".md", ".txt"})
    raise PromptError(f"no prompt template {name!r} in {folder} (available: {available})")


def escape_chunk_text(text: str) -> str:
    """Neutralise chunk-tag look-alikes: ``</chunk>`` becomes ``&lt;/chunk>``."""
    return _FENCE_LOOKALIKE_RE.sub("&lt;", text)


def safe_chunk_id(chunk_id: str) -> str:
    return _SAFE_ID_RE.sub("_", str(chunk_id)) or "_"


def fence_chunk(chunk: ContextChunk) -> str:
    """One chunk as a labelled, fenced block whose body cannot close the fence."""
    body = escape_chunk_text(chunk.text.strip())
    title = escape_chunk_text(" ".join((chunk.title or "").split()))
    if title:
        body = f"Title: {title}\n{body}"
    return f"{FENCE_OPEN.format(chunk_id=safe_chunk_id(chunk.chunk_id))}\n{body}\n{FENCE_CLOSE}"


def format_context(chunks: Sequence[ContextChunk]) -> str:
    if not chunks:
        return NO_CONTEXT
    return "\n\n".join(fence_chunk(chunk) for chunk in chunks)


def parse_citations(text: str, allowed_ids: Iterable[str] | None = None) -> list[str]:
    """Chunk ids cited as ``[chunk:ID]`` in ``text``, first-seen order, without duplicates.

    With ``allowed_ids`` (the retrieved chunks) a citation counts only if it names one of them —
    exactly, or as a unique prefix of at least :data:`MIN_CITATION_PREFIX` characters, because
    small models often truncate 32-character hashes. Anything else (a made-up id, an id quoted
    from an injected chunk) is dropped.
    """
    allowed = list(dict.fromkeys(allowed_ids)) if allowed_ids is not None else None
    by_safe = {safe_chunk_id(cid): cid for cid in allowed} if allowed is not None else {}
    cited: list[str] = []
    for block in _CITATION_BLOCK_RE.finditer(text):
        for raw in re.split(r"[,;\s]+", block.group(1).strip()):
            match = _CITATION_ID_RE.fullmatch(raw.strip())
            if not match:
                continue
            candidate = match.group(1).strip(".:")
            if not candidate:
                continue
            resolved = candidate if allowed is None else _resolve(candidate, by_safe)
            if resolved is not None and resolved not in cited:
                cited.append(resolved)
    return cited


def _resolve(candidate: str, by_safe: dict[str, str]) -> str | None:
    if candidate in by_safe:
        return by_safe[candidate]
    if len(candidate) < MIN_CITATION_PREFIX:
        return None
    matches = [orig for safe, orig in by_safe.items() if safe.startswith(candidate)]
    return matches[0] if len(matches) == 1 else None
