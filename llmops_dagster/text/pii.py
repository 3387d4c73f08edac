"""Rule-based PII redaction that runs offline, in-process, with no model download.

Why rules: documents are redacted *before* they are chunked, embedded, indexed and shown to an
LLM, so the redactor sits on the hot path of every ingest and must work on an air-gapped
machine. Each detector is tuned for precision on technical text: a redactor that eats dates,
version numbers, timestamps and ticket ids destroys exactly the facts a RAG system is asked
about.

Kinds and how they are found:

* ``EMAIL``  - RFC-5322-ish local part ``@`` domain with a TLD.
* ``IP``     - IPv4 with every octet 0-255 (not when written as a version: ``v1.2.3.4``,
  ``version 1.2.3.4``), and IPv6 validated by :mod:`ipaddress`.
* ``CARD``   - 13-19 digits, optionally grouped by spaces or dashes, whose first digit is a
  payment-card industry (2-6) and that pass the Luhn check.
* ``PHONE``  - international numbers written with a ``+`` country code (8-15 digits, E.164),
  and North-American numbers written as ``(555) 010-4477`` or ``555-010-4477`` / ``555.010.4477``
  / ``555 010 4477``. Bare digit runs are never phones (they are ids far more often), and a
  number introduced as an order/invoice/ticket/id/reference is left alone.
* ``PERSON`` - a conservative heuristic, not NER: names after an honorific (``Dr. Jane Smith``
  becomes ``Dr. [PERSON]``), after a label (``Name:``, ``Author:``, ``From:``, ``Contact:``,
  ``Signed:``, ``Reported by``, ``Assigned to`` ...), after verbs of contact (``contact Jane
  Smith at ...``), and a signature line (a capitalised 2-3 word line right after ``Regards,``
  / ``Best,`` / ``Thanks,`` / ``Sincerely,``).

Limitation: names in running prose without one of those cues (``Jane said the build broke``)
are **not** found. Real NER needs a statistical model; the spaCy/presidio English models are
not published on PyPI by their authors (only unofficial re-uploads exist), and pulling a
third-party re-upload into a redaction path is a supply-chain risk. A deployment that needs
recall on names can plug a NER model in front of this function; ``names=False`` turns the
heuristic off where it misfires (e.g. documents about people whose names must stay).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS: tuple[str, ...] = ("EMAIL", "IP", "CARD", "PHONE", "PERSON")


@dataclass
class RedactionResult:
    """Redacted text plus how many spans of each kind were replaced (all kinds present)."""

    text: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# --- EMAIL -------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

# --- IP ----------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_VERSION_CONTEXT = re.compile(r"(?:\bversions?|\bver\.?|\brelease|\bbuild|\bv)\s*:?\s*$", re.I)
# Candidates only; ipaddress decides. Allows "::", a trailing dotted quad, and a zone id.
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?:%[\w.]+)?(?![\w:])"
)

# --- CARD --------------------------------------------------------------------------------------
_CARD = re.compile(r"(?<![\d.,-])[2-6]\d{2,3}(?:[ -]?\d){9,17}(?![\d]|[.,]\d|-\d)")


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9) passes the Luhn checksum used by payment cards."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# --- PHONE -------------------------------------------------------------------------------------
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,5}){1,6}(?![\w])")
_PHONE_US = re.compile(
    r"(?<![\w(+-])(?:\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}([ .-])\d{3}\1\d{4})(?![\w]|[.-]\d)"
)
_ID_CONTEXT = re.compile(
    r"(?:\b(?:orders?|invoices?|tickets?|ids?|ref(?:erence)?|accounts?|acct|serial|sku|isbn|"
    r"case|claim|chunks?|docs?|issues?|pr|build|no|nr)\.?|#)\s*(?:number|no\.?|id)?\s*[:#]?\s*$",
    re.I,
)
_PHONE_CONTEXT = re.compile(r"\b(?:phone|tel|telephone|mobile|cell|fax|call|sms|whatsapp)\b", re.I)

# --- PERSON ------------------------------------------------------------------------------------
_NAME_WORD = r"(?:(?:[A-Z]['’])?(?:Mc|Mac)?[A-Z][a-z]+(?:-[A-Z][a-z]+)?|[A-Z]\.)"
_NAME = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{1,2}}"
_HONORIFIC = re.compile(
    rf"\b(?P<lead>(?:Mr|Mrs|Ms|Mx|Dr|Prof|Miss|Sir|Dame)\.?[ \t]+)"
    rf"(?P<name>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})"
)
_LABELLED = re.compile(
    rf"(?P<lead>(?:^|\n)[ \t>*_-]*(?i:Name|Full name|Contact|Author|Written by|From|To|Cc|Signed|"
    rf"Reported by|Assigned to|Reviewed by|Approved by|Owner|Requester|Customer|Patient)"
    rf"[ \t]*[:*]*[ \t]*)(?P<name>{_NAME})(?=[ \t]*(?:$|\n|<|\(|,))",
)
_CONTACT_VERB = re.compile(
    rf"(?P<lead>\b(?i:contact|contacted|call|called|email|emailed|ask|asked|ping|cc|thank|"
    rf"thanks|by)[ \t]+)(?P<name>{_NAME})(?=[ \t]+(?:at|on|via|by|for|from)\b|[ \t]*[,.;:]|$)",
)
_SIGNATURE = re.compile(
    rf"(?P<lead>(?:^|\n)[ \t]*(?i:Best regards|Kind regards|Warm regards|Regards|Best|Cheers|"
    rf"Thanks|Thank you|Sincerely|Yours sincerely|Yours truly)[ \t]*,?[ \t]*\n[ \t]*)"
    rf"(?P<name>{_NAME})(?=[ \t]*(?:$|\n))",
)
# Capitalised words that start "names" far more often as team/product/place words.
_NOT_NAME_WORDS = """
    the a an all our your their this that team support sales service services customer
    customers department dept office company inc ltd llc corp group admin administrator
    engineering product marketing finance legal security operations ops it hr help desk
    desk user users staff everyone new york san los las united states kingdom north south
    east west general manager director january february march april may june july august
    september october november december monday tuesday wednesday thursday friday saturday
    sunday dear hello hi api server client data
"""
_NOT_NAMES = frozenset(_NOT_NAME_WORDS.split())


def _looks_like_name(name: str) -> bool:
    words = [w.strip(".").lower() for w in name.split()]
    return bool(words) and not any(w in _NOT_NAMES for w in words)


def _redact_ips(text: str, counts: dict[str, int]) -> str:
    def ipv4(match: re.Match[str]) -> str:
        if _VERSION_CONTEXT.search(text, max(0, match.start() - 12), match.start()):
            return match.group(0)
        counts["IP"] += 1
        return "[IP]"

    text = _IPV4.sub(ipv4, text)

    def ipv6(match: re.Match[str]) -> str:
        candidate = match.group(0)
        if candidate.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", candidate):
            return candidate
        try:
            ipaddress.IPv6Address(candidate.split("%", 1)[0])
        except ValueError:
            return candidate
        counts["IP"] += 1
        return "[IP]"

    return _IPV6.sub(ipv6, text)


def _redact_cards(text: str, counts: dict[str, int]) -> str:
    def card(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = re.sub(r"[ -]", "", raw)
        # Mixed or doubled separators ("1234 - 5678") are not how cards are written.
        if not 13 <= len(digits) <= 19 or re.search(r"[ -]{2,}", raw) or not luhn_valid(digits):
            return raw
        counts["CARD"] += 1
        return "[CARD]"

    return _CARD.sub(card, text)


def _in_id_context(text: str, start: int) -> bool:
    window = text[max(0, start - 24) : start]
    return bool(_ID_CONTEXT.search(window)) and not _PHONE_CONTEXT.search(window)


def _redact_phones(text: str, counts: dict[str, int]) -> str:
    def intl(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = re.sub(r"\D", "", raw)
        # E.164: at most 15 digits including the country code; fewer than 8 is not a number.
        if not 8 <= len(digits) <= 15 or _in_id_context(text, match.start()):
            return raw
        counts["PHONE"] += 1
        return "[PHONE]"

    def national(match: re.Match[str]) -> str:
        raw = match.group(0)
        if _in_id_context(text, match.start()):
            return raw
        counts["PHONE"] += 1
        return "[PHONE]"

    text = _PHONE_INTL.sub(intl, text)
    return _PHONE_US.sub(national, text)


def _redact_names(text: str, counts: dict[str, int]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if not _looks_like_name(name):
            return match.group(0)
        counts["PERSON"] += 1
        return match.group("lead") + "[PERSON]"

    patterns: list[re.Pattern[str]] = [_SIGNATURE, _LABELLED, _HONORIFIC, _CONTACT_VERB]
    for pattern in patterns:
        text = pattern.sub(replace, text)
    return text


_STEPS: tuple[tuple[str, Callable[[str, dict[str, int]], str]], ...] = (
    ("EMAIL", lambda text, counts: _sub_counted(_EMAIL, "EMAIL", text, counts)),
    # IPs and cards before phones: a phone pattern must not eat half of either.
    ("IP", _redact_ips),
    ("CARD", _redact_cards),
    ("PHONE", _redact_phones),
)


def _sub_counted(pattern: re.Pattern[str], kind: str, text: str, counts: dict[str, int]) -> str:
    new_text, n = pattern.subn(f"[{kind}]", text)
    counts[kind] += n
    return new_text


def redact_pii(text: str, *, names: bool = True) -> RedactionResult:
    """Replace PII in ``text`` with ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IP]``, ``[PERSON]``.

    Deterministic and idempotent (redacting twice changes nothing more), so the redacted text's
    ``content_hash`` is stable across runs. ``names=False`` skips the name heuristic.
    """
    result = RedactionResult(text=text)
    if not text:
        return result
    for _kind, step in _STEPS:
        text = step(text, result.counts)
    if names:
        text = _redact_names(text, result.counts)
    result.text = text
    return result
