"""Markdown code fences, tracked the one way both the cleaner and the chunker need."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# CommonMark: up to three spaces, then three or more backticks or tildes; a fence closes only on
# a run of the same character at least as long as the opener's three.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def fenced_lines(lines: Iterable[str]) -> Iterator[tuple[str, bool, bool]]:
    """Each line with ``(line, is_fence, in_code)``: ``is_fence`` for an opening or closing
    fence line, ``in_code`` for a line inside a fenced block (fence lines excluded)."""
    in_fence: str | None = None
    for line in lines:
        fence = _FENCE.match(line)
        if fence:
            marker = fence.group(1)
            if in_fence is None:
                in_fence = marker[0] * 3
            elif marker.startswith(in_fence):
                in_fence = None
            yield line, True, False
        else:
            yield line, False, in_fence is not None
