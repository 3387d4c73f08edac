"""A non-LLM answerer: the best-supported sentence(s) of the retrieved chunks, with citations.

Why: a 135M model on CPU paraphrases badly and often cites nothing; copying the right sentence
of a retrieved chunk is fast, cannot hallucinate, and is a baseline the LLM has to beat in the
champion/challenger comparison (a bundle may use it instead of a ``Generator``). Deterministic:

1. **Sentences.** Blank lines, bullets, numbered items, table rows (``first cell: rest``) and
   header ``key: value`` lines start blocks; wrapped lines join theirs. Headings (``#``,
   ALL-CAPS), table rules, the ``Title: …`` line, one-token metadata (``updated_at: 2026-…``)
   and markdown emphasis/links go. Blocks split at ``.!?`` + space + capital or digit, not
   after abbreviations (``e.g.``, ``Dr.``, initials); ``£1,200.50`` has no space inside.
2. **Score**: the IDF-weighted share of the question's stemmed ``content_tokens`` a sentence
   holds (IDF over the retrieved sentences: a word most have says little; ``TITLE_WEIGHT`` for
   chunk-title words, which name the document, not the answer; an acronym defined in the chunks
   also stands for its words), plus ``RANK_BONUS / (1 + rank)``, plus ``NUMBER_BONUS`` for a
   number when the question asks for one ("how many", "when", "which year"…).
3. **Pick.** No shared question word → never chosen (nothing overlaps → ``""``, no citations).
   Best first (ties: rank, then position), no near-duplicates, none under ``min_relative_score``
   × the best, ≤ ``max_sentences`` within ``max_chars``; in reading order, citing their chunks.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmops_dagster.rag.hits import HitLike, content_tokens

#: Bump when the algorithm changes: answers of another version are another model's answers.
VERSION = "v1"
RANK_BONUS = 0.05
NUMBER_BONUS = 0.1
TITLE_WEIGHT = 0.3
DUPLICATE_JACCARD = 0.8

_ABBREVIATIONS_TEXT = "e.g i.e etc vs approx no nos fig dr mr mrs ms prof st inc ltd co jr sr"
_ABBREVIATIONS = frozenset(_ABBREVIATIONS_TEXT.split())
_NUMERIC_QUESTION_RE = re.compile(
    r"(?i)\b(how (many|much|long|quickly|soon|often|large|big|old|far|fast|late)|when|minimum|"
    r"(what|which) (year|date|time|day|percentage|version|rate|speed|temperature)|maximum)\b"
)
_NUMBER_RE = re.compile(r"(?<![A-Za-z\-])\d")  # a quantity, not a name like "S4" or "BP-7"
_NOISE_RE = re.compile(r"^#{1,6}\s|^\|?[\s:|-]*-{3,}[\s:|-]*$")  # a heading or a table rule
_BULLET_RE = re.compile(r"^(?:[-*•+]|\d{1,2}[.)])\s+")
_INLINE_BULLET_RE = re.compile(r"(?<=[.:;,!?])\s+[-*•]\s+(?=\S)")
_KEY_VALUE_RE = re.compile(r"^([A-Za-z][A-Za-z_]*(?: [A-Za-z]+){0,2}):\s+(.*)$")
_CAPS_LEAD_RE = re.compile(r"^(?:[A-Z][A-Z0-9&/'-]*\s+){2,}(?=[A-Z][a-z])")
_MARKUP_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)|\*\*|__|`")  # a link keeps its text
_BOUNDARY_RE = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9£$€])")
_ACRONYM_RE = re.compile(r"((?:[\w-]+\s+){1,8})\(([A-Z][A-Za-z0-9]{1,7})\)")


@dataclass(frozen=True)
class ExtractiveAnswer:
    """An extracted answer; ``sentence_scores`` match the answer's sentences in order."""

    text: str
    cited_chunk_ids: list[str]
    sentence_scores: list[float]
    seconds: float


@dataclass(frozen=True)
class _Sentence:
    text: str
    chunk_id: str
    rank: int
    position: int
    stems: frozenset[str]


def _stem(word: str) -> str:
    """Crude suffix stripping so ``incurring``/``incurred`` and ``claims``/``claim`` meet."""
    if len(word) <= 4 or word[-1].isdigit():
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    doubled = len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou"
    return word[:-1] if doubled else word  # "incurr" → "incur"


def stems(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in content_tokens(text))


def _acronyms(texts: Iterable[str]) -> dict[str, frozenset[str]]:
    """Acronyms defined as ``Long Name (LN)`` in ``texts``, with the stems of their words."""
    found: dict[str, frozenset[str]] = {}
    for match in _ACRONYM_RE.finditer("\n".join(texts)):
        acronym = match.group(2)
        words = match.group(1).split()[-len(acronym) :]
        if "".join(w[0] for w in words).lower() == acronym.lower():
            found[_stem(acronym.lower())] = stems(" ".join(words))
    return found


def _clean(text: str) -> str:
    text = _MARKUP_RE.sub(r"\1", _BULLET_RE.sub("", text.strip()))
    return " ".join(_CAPS_LEAD_RE.sub("", text).split())


def _blocks(text: str) -> list[str]:
    """Paragraphs, bullet items, table rows and ``key: value`` lines, without markdown noise."""
    blocks: list[list[str]] = []
    open_block = False  # may the next plain line continue the last block?
    for raw in text.splitlines():
        line = raw.strip()
        key_value = _KEY_VALUE_RE.match(line)
        if not line or _NOISE_RE.match(line):
            open_block = False
        elif not re.search(r"[a-z]", line) and not line.endswith((".", "!", "?")):
            open_block = False  # an ALL-CAPS runbook heading, or a bare number
        elif line.startswith("|"):  # one row, or several run together ("| a | b | | c | d |")
            for row in re.split(r"\|\s+\|", line.strip("|")):
                cells = [c.strip() for c in row.split("|") if c.strip()]
                if cells and not _NOISE_RE.match(row.strip()):
                    blocks.append([cells[0] + (": " + ", ".join(cells[1:]) if cells[1:] else "")])
            open_block = False
        elif key_value and (not open_block or re.fullmatch(r"[a-z_]+", key_value.group(1))):
            key, value = key_value.group(1), key_value.group(2).strip()
            if key.lower() != "title" and len(value.split()) > 1:  # else a title or timestamp
                blocks.append([value if re.fullmatch(r"[a-z_]+", key) else line])
            open_block = False  # header fields ("Owner: …") do not wrap onto the next line
        elif _BULLET_RE.match(line) or not open_block:
            blocks.append([line])
            open_block = True
        else:
            blocks[-1].append(line)
    parts = [p for block in blocks for p in _INLINE_BULLET_RE.split(" ".join(block))]
    return [cleaned for part in parts if (cleaned := _clean(part))]


def split_sentences(text: str) -> list[str]:
    """Sentences of a chunk's text (see the module docstring for the rules)."""
    sentences: list[str] = []
    for block in _blocks(text):
        start = 0
        for match in _BOUNDARY_RE.finditer(block):
            last_word = block[start : match.start() + 1].split()[-1].rstrip(".").lower()
            if last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word):
                continue
            sentences.append(block[start : match.end()].strip())
            start = match.end()
        if block[start:].strip():
            sentences.append(block[start:].strip())
    return sentences


def _as_sentence(text: str, max_chars: int) -> str:
    """``text`` ending like a sentence, cut at a word (with "…") if over ``max_chars``."""
    text = text.rstrip(" ,;")
    if not text.endswith((".", "!", "?", "…")):
        text += "."
    if len(text) <= max_chars:
        return text
    cut = text[: max(0, max_chars - 1)].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…" if cut else ""


class ExtractiveAnswerer:
    """Answers with the retrieved sentences that best match the question (no LLM)."""

    def __init__(
        self, max_sentences: int = 2, max_chars: int = 400, min_relative_score: float = 0.75
    ) -> None:
        if max_sentences < 1 or max_chars < 1:
            raise ValueError("max_sentences and max_chars must be at least 1")
        self.max_sentences = max_sentences
        self.max_chars = max_chars
        self.min_relative_score = min_relative_score

    @property
    def model_id(self) -> str:
        """``extractive:v1``; non-default settings are part of the id (they change answers)."""
        settings = f":s{self.max_sentences}-c{self.max_chars}-r{self.min_relative_score:g}"
        return f"extractive:{VERSION}" + ("" if settings == ":s2-c400-r0.75" else settings)

    def answer(self, question: str, hits: Sequence[HitLike]) -> ExtractiveAnswer:
        """The best-supported sentence(s) of ``hits`` (in rank order), or ``""`` if none."""
        started = time.perf_counter()
        acronyms = _acronyms([question, *(hit.text for hit in hits)])
        candidates = [
            _Sentence(text, hit.chunk_id, rank, pos, _expand(stems(text), acronyms))
            for rank, hit in enumerate(hits)
            for pos, text in enumerate(split_sentences(hit.text))
        ]
        titled = frozenset().union(*(stems(hit.title or "") for hit in hits))
        query = _expand(stems(_NUMERIC_QUESTION_RE.sub(" ", question)), acronyms)
        scored = _score(query, candidates, titled, bool(_NUMERIC_QUESTION_RE.search(question)))
        chosen: list[tuple[_Sentence, str, float]] = []
        used = -1  # the first sentence needs no joining space
        for sentence, score in scored:
            if len(chosen) == self.max_sentences or score < self.min_relative_score * scored[0][1]:
                break
            overlaps = [
                (len(sentence.stems & c.stems), len(sentence.stems | c.stems)) for c, *_ in chosen
            ]
            if any(common >= DUPLICATE_JACCARD * union for common, union in overlaps):
                continue  # a near-duplicate (overlapping passages repeat sentences)
            text = _as_sentence(sentence.text, self.max_chars if not chosen else 10**9)
            if not text or used + 1 + len(text) > self.max_chars:
                break
            used += 1 + len(text)
            chosen.append((sentence, text, score))
        chosen.sort(key=lambda item: (item[0].rank, item[0].position))
        return ExtractiveAnswer(
            text=" ".join(text for _, text, _ in chosen),
            cited_chunk_ids=list(dict.fromkeys(s.chunk_id for s, _, _ in chosen)),
            sentence_scores=[round(score, 6) for _, _, score in chosen],
            seconds=time.perf_counter() - started,
        )

    def answer_many(
        self, questions: Sequence[str], hits_per_question: Sequence[Sequence[HitLike]]
    ) -> list[ExtractiveAnswer]:
        """One answer per question; ``hits_per_question`` must be as long as ``questions``."""
        return [self.answer(q, h) for q, h in zip(questions, hits_per_question, strict=True)]


def _expand(words: frozenset[str], acronyms: dict[str, frozenset[str]]) -> frozenset[str]:
    return words.union(*(acronyms[w] for w in words if w in acronyms))


def _score(
    query: frozenset[str], candidates: list[_Sentence], titled: frozenset[str], wants_number: bool
) -> list[tuple[_Sentence, float]]:
    """Sentences sharing a question word, with scores, best first (ties: rank, position)."""
    weights = {}
    for term in sorted(query):
        df = sum(term in s.stems for s in candidates)
        if df:
            idf = math.log(1 + len(candidates) / df)
            weights[term] = idf * (TITLE_WEIGHT if term in titled else 1.0)
    total = sum(weights.values())
    scored = []
    for s in candidates:
        matched = sum(w for t, w in weights.items() if t in s.stems)
        if matched > 0:
            bonus = NUMBER_BONUS if wants_number and _NUMBER_RE.search(s.text) else 0.0
            scored.append((s, matched / total + RANK_BONUS / (1 + s.rank) + bonus))
    scored.sort(key=lambda item: (-item[1], item[0].rank, item[0].position))
    return scored
