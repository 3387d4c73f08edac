"""A heuristic prompt-injection screen for questions and retrieved chunks.

Why heuristics: no injection classifier is published on PyPI with its weights (the model hub
is unreachable here), and a screen must run on every request in microseconds. The rules target
what injected text has to contain to work — an instruction to drop earlier instructions, a new
role or persona, a request for the hidden prompt, fake conversation/markup delimiters, and text
hidden with zero-width or bidirectional control characters — and are tested on a table of
hostile and ordinary inputs. The screen *flags*; the prompt still fences chunks as data
(``rag/prompts.py``), and a policy decides whether a flagged question is refused.

Text is normalised first (NFKC, control and zero-width characters removed, whitespace
collapsed, lower case), so ``i\u200bgnore previous instructions`` or full-width letters do not
slip past the patterns; the presence of invisible characters is itself a flag.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Zero-width and bidirectional control characters: invisible in a UI, meaningful to a model.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "override_instructions",
        re.compile(
            r"\b(ignore|disregard|forget|override|bypass|skip)\b.{0,40}?\b(previous|prior|above|"
            r"earlier|preceding|all|any|the|your|system)\b.{0,30}?\b(instructions?|prompts?|"
            r"rules?|directions?|guidelines?|context|messages?)\b"
        ),
    ),
    (
        "new_instructions",
        re.compile(r"\b(new|updated|real|actual) (instructions?|rules?|system prompt)\s*:"),
    ),
    (
        "role_change",
        re.compile(
            r"\b(you are now|from now on,? you|act as (an? )?(unfiltered|unrestricted|jailbroken)|"
            r"pretend (that )?you|developer mode|do anything now|\bdan\b mode)"
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(reveal|show|print|repeat|output|leak|tell me)\b.{0,30}?\b(system prompt|hidden "
            r"(prompt|instructions?)|your (instructions|prompt|rules)|initial prompt)"
        ),
    ),
    (
        "role_marker",
        re.compile(
            r"(<\|?(im_start|im_end|system|assistant|user|endoftext)\|?>|\[/?inst\]|<<sys>>|"
            r"(^|\n)\s*#{0,3}\s*(system|assistant)\s*:)"
        ),
    ),
    ("fence_break", re.compile(r"</?\s*(chunk|context|document|system)\b[^>]*>")),
)


@dataclass(frozen=True)
class Screen:
    """What the screen found; ``flags`` are rule names, empty when nothing looked hostile."""

    flags: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return re.sub(r"[ \t]+", " ", text).lower()


def screen(text: str) -> Screen:
    """Screen one text (a question or a chunk)."""
    flags = ["invisible_characters"] if _INVISIBLE.search(text) else []
    clean = normalize(text)
    flags.extend(name for name, pattern in _RULES if pattern.search(clean))
    return Screen(tuple(flags))
