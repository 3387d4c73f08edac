"""Golden questions written by the configured generator, checked, or the template instead.

``golden_candidates`` drafts questions from templates over chunk sentences
(:func:`llmops_dagster.train.raft.draft_question`). With ``drafter: generator`` the configured
generator writes the question for each sampled candidate's sentence (the prompt is
``llmops_dagster/prompts/golden_question.md``), and a draft is kept only when it passes
:func:`check_question`:

- one question: the first line of the reply, cut after its first ``?`` (no ``?``: refused);
- about the sentence: it shares at least :data:`MIN_SHARED_WORDS` content words with it;
- not a restatement: its content words overlap the sentence's by Jaccard below
  :data:`MAX_RESTATEMENT_JACCARD` (a question that copies the sentence gives the answer away);
- not a golden item's or another candidate's question (the drafting rules' Jaccard,
  ``GoldenOverlapRule.question_jaccard``), and at most :data:`MAX_QUESTION_WORDS` words.

A draft that fails keeps the template question (counted, with the reason): the candidate is
never lost, and a weak generator degrades to the templates instead of to nonsense. The answer
sentence, the relevant document and the candidate's id stay the template draft's, so a
decision on a candidate holds whichever drafter wrote its question.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmops_dagster.models.base import Generator
from llmops_dagster.rag.hits import content_tokens
from llmops_dagster.rag.prompts import PROMPTS_DIR

PROMPT_FILE = PROMPTS_DIR / "golden_question.md"
#: One short question; more tokens only cost time on a CPU model.
MAX_NEW_TOKENS = 40
MIN_SHARED_WORDS = 2
MAX_RESTATEMENT_JACCARD = 0.8
MAX_QUESTION_WORDS = 40
#: ``GoldenOverlapRule.question_jaccard``: a question this close to another restates it.
QUESTION_JACCARD = 0.5
_SECTION_RE = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


def question_messages(sentence: str, title: str) -> list[dict[str, str]]:
    """The chat messages asking for one question about ``sentence`` (of document ``title``)."""
    parts = _SECTION_RE.split(PROMPT_FILE.read_text(encoding="utf-8"))
    sections = {label: body.strip() for label, body in zip(parts[1::2], parts[2::2], strict=True)}
    user = sections["user"].replace("{{title}}", " ".join(title.split()) or "(untitled)")
    user = user.replace("{{sentence}}", " ".join(sentence.split()))
    return [{"role": "system", "content": sections["system"]}, {"role": "user", "content": user}]


def _jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def extract_question(reply: str) -> str | None:
    """The first line of ``reply`` that holds a ``?``, cut after it (None: no question)."""
    for line in reply.strip().splitlines():
        line = line.strip().removeprefix("Question:").strip().strip('"“”')
        if "?" in line:
            return line[: line.index("?") + 1].strip()
    return None


def check_question(
    reply: str, sentence: str, *, others: Sequence[set[str]] = ()
) -> tuple[str | None, str]:
    """(question, "ok") when ``reply`` holds a usable question about ``sentence``, else (None,
    why). ``others``: content-word sets of questions it must not restate (golden, candidates)."""
    question = extract_question(reply)
    if question is None or len(question) < 2:
        return None, "no question mark"
    words = question.split()
    if len(words) > MAX_QUESTION_WORDS:
        return None, f"longer than {MAX_QUESTION_WORDS} words"
    q_tokens, s_tokens = set(content_tokens(question)), set(content_tokens(sentence))
    if len(q_tokens & s_tokens) < MIN_SHARED_WORDS:
        return None, f"shares fewer than {MIN_SHARED_WORDS} content words with the sentence"
    if _jaccard(q_tokens, s_tokens) >= MAX_RESTATEMENT_JACCARD:
        return None, "restates the sentence"
    if any(_jaccard(q_tokens, other) >= QUESTION_JACCARD for other in others):
        return None, "restates a golden or another candidate's question"
    return question[0].upper() + question[1:], "ok"


@dataclass(frozen=True)
class DraftRequest:
    """A candidate's answer sentence, its document's title and its template question."""

    sentence: str
    title: str
    template_question: str


@dataclass
class GeneratorDrafts:
    """One question per request (the generator's or the template's), and the counts."""

    questions: list[str]
    from_generator: list[bool]
    fallback_reasons: Counter[str] = field(default_factory=Counter)
    #: The generator's reply per request, as it came (what a reader checks a refusal against).
    replies: list[str] = field(default_factory=list)

    @property
    def n_generator_drafts(self) -> int:
        return sum(self.from_generator)

    @property
    def n_template_fallbacks(self) -> int:
        return len(self.from_generator) - self.n_generator_drafts


def draft_with_generator(
    requests: Sequence[DraftRequest],
    generator: Generator,
    *,
    golden_questions: Iterable[str] = (),
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> GeneratorDrafts:
    """Ask ``generator`` (greedy, one batch) for each request's question; keep each one
    :func:`check_question` accepts, else the template question (reason counted)."""
    replies = generator.generate(
        [question_messages(r.sentence, r.title) for r in requests],
        max_new_tokens=max_new_tokens,
        temperature=0.0,
    )
    others = [set(content_tokens(q)) for q in golden_questions]
    out = GeneratorDrafts(questions=[], from_generator=[])
    for request, reply in zip(requests, replies, strict=True):
        question, why = check_question(reply.text, request.sentence, others=others)
        if question is None:
            out.fallback_reasons[why] += 1
            question = request.template_question
        out.questions.append(question)
        out.from_generator.append(why == "ok")
        out.replies.append(reply.text)
        others.append(set(content_tokens(question)))
    return out
