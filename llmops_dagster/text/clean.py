"""Text normalisation applied to every extracted document before PII redaction and chunking.

Why: the same content arrives from files, APIs and databases with different Unicode forms, line
endings, invisible characters and whitespace. Normalising once makes ``content_hash`` stable
(an unchanged document is not re-chunked or re-embedded because a CRLF became an LF) and gives
the chunker clean paragraph breaks to split on.

The Markdown structure is kept on purpose: leading indentation (nested lists, indented code),
heading markers and list markers are untouched, and the inside of fenced code blocks keeps its
inner spacing, because the chunker splits on that structure and readers see it in answers.
"""

from __future__ import annotations

import re
import unicodedata

from llmops_dagster.text.fences import fenced_lines

# Line separators that are not "\n": CRLF/CR from other platforms, vertical tab and form feed
# (PDF extractors emit a form feed per page), NEL and the Unicode line/paragraph separators.
_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0/C1 control characters except tab and newline (already normalised above).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
# Invisible characters that only break tokenisation and hashing: BOM, zero-width space, soft
# hyphen, word joiner. Zero-width (non-)joiners are kept: they change meaning in some scripts
# and in emoji sequences.
_INVISIBLE = re.compile(r"[\ufeff\u200b\u00ad\u2060]")
# Every Unicode space separator other than the ASCII space (NBSP, thin space, ideographic...).
_EXOTIC_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_SPACE_RUN = re.compile(r" {2,}")
_BLANK_RUN = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Return ``text`` normalised for hashing, search and chunking.

    Steps: Unicode NFC; line endings to ``\\n``; control and invisible characters removed (tab
    and newline kept); exotic spaces to ASCII spaces; runs of spaces inside a line collapsed to
    one (leading indentation and fenced code blocks untouched); trailing spaces removed; runs of
    blank lines collapsed to a single blank line; leading/trailing whitespace stripped.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _INVISIBLE.sub("", text)
    text = _EXOTIC_SPACES.sub(" ", text)

    lines = text.split("\n")
    for index, (line, is_fence, in_code) in enumerate(fenced_lines(list(lines))):
        if is_fence or in_code:
            lines[index] = line.rstrip()
            continue
        body = line.lstrip(" \t")
        indent = line[: len(line) - len(body)]
        lines[index] = indent + _SPACE_RUN.sub(" ", body).rstrip() if body else ""
    text = "\n".join(lines)
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip()
