"""redact_pii: find real PII, and leave dates, versions, timestamps and ids alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmops_dagster.text.pii import KINDS, luhn_valid, redact_pii

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("Mail jane.doe@example.com now", "Mail [EMAIL] now", "EMAIL"),
        ("a+tag@sub.example.co.uk.", "[EMAIL].", "EMAIL"),
        ("Call +1 555 0100 123 today", "Call [PHONE] today", "PHONE"),
        ("Call (555) 010-4477 today", "Call [PHONE] today", "PHONE"),
        ("London: +44 20 7946 0958.", "London: [PHONE].", "PHONE"),
        ("Paris +33 1 23 45 67 89", "Paris [PHONE]", "PHONE"),
        ("US 555-010-4477 or 555.010.4477", "US [PHONE] or [PHONE]", "PHONE"),
        ("phone number: 555-010-4477", "phone number: [PHONE]", "PHONE"),
        ("Card 4111 1111 1111 1111 exp", "Card [CARD] exp", "CARD"),
        ("Card 4111-1111-1111-1111 exp", "Card [CARD] exp", "CARD"),
        ("Card 5555555555554444", "Card [CARD]", "CARD"),
        ("Amex 3782 822463 10005", "Amex [CARD]", "CARD"),
        ("Server 192.168.1.20 is down", "Server [IP] is down", "IP"),
        ("from 10.0.0.1:8080", "from [IP]:8080", "IP"),
        ("v6 2001:db8::8a2e:370:7334 up", "v6 [IP] up", "IP"),
        ("loopback ::1 and fe80::1%eth0", "loopback [IP] and [IP]", "IP"),
        ("Dr. Alan Turing wrote it", "Dr. [PERSON] wrote it", "PERSON"),
        ("Mr. O'Brien and Ms. McDonald", "Mr. [PERSON] and Ms. [PERSON]", "PERSON"),
        ("Name: Grace Hopper", "Name: [PERSON]", "PERSON"),
        ("Author: Ada Lovelace\nBody", "Author: [PERSON]\nBody", "PERSON"),
        ("Contact Jane Smith at the desk.", "Contact [PERSON] at the desk.", "PERSON"),
        ("Thanks,\nJohn Doe\n", "Thanks,\n[PERSON]\n", "PERSON"),
    ],
)
def test_redacts_positive_examples(text: str, expected: str, kind: str) -> None:
    result = redact_pii(text)
    assert result.text == expected
    assert result.counts[kind] == expected.count(f"[{kind}]")
    assert result.total == result.counts[kind]


@pytest.mark.parametrize(
    "text",
    [
        "Released 2026-10-01.",
        "At 2026-10-01T12:30:45Z and 2026-10-01 12:30:45+02:00",
        "Dates 01/10/2026, 10.01.2026 and 2026/10/01",
        "Upgrade to v1.2.3.4 or version 1.2.3.4 or 10.0.0",
        "Not an ip: 256.1.1.1 or 1.2.3 or 1.2.3.4.5",
        "The year 2026 and 1999.",
        "order 123-456-7890, ticket #555-010-4477, invoice no. 555 010 4477",
        "Order number: +12025550143",
        "chunk 5550100123 and id 12345678901234 and 00000000",
        "Times 12:30:45 and 10:00, ratio 1:2:3",
        "Price $1,234.56 and pi 3.14159265358979",
        "ISBN 978-3-16-148410-0",
        "Not a card 4111 1111 1111 1112",
        "UUID 123e4567-e89b-12d3-a456-426614174000",
        "sha 9f86d081884c7d659a2feaa0c55ad015",
        "MAC-like 2001:db8 and a::b::c",
        "To: All Staff",
        "From: Customer Support",
        "contact Customer Support at once",
        "Jane said the build broke.",
        "user@localhost is not an address",
    ],
)
def test_leaves_negative_examples_alone(text: str) -> None:
    result = redact_pii(text)
    assert result.text == text
    assert result.total == 0


def test_names_can_be_switched_off() -> None:
    text = "Dr. Alan Turing, alan@example.org"
    assert redact_pii(text, names=False).text == "Dr. Alan Turing, [EMAIL]"
    assert redact_pii(text).text == "Dr. [PERSON], [EMAIL]"


def test_counts_always_have_every_kind() -> None:
    assert redact_pii("").counts == dict.fromkeys(KINDS, 0)
    counts = redact_pii("a@b.io, c@d.io, 10.1.1.1").counts
    assert counts == {"EMAIL": 2, "IP": 1, "CARD": 0, "PHONE": 0, "PERSON": 0}


def test_mixed_document() -> None:
    text = (
        "# Incident 2026-10-01\n\nReported by: Jane Smith\n"
        "Host 10.20.30.40 (v2.3.1.0) paged +1 555 0100 123; card 4111 1111 1111 1111.\n"
    )
    result = redact_pii(text)
    assert result.text == (
        "# Incident 2026-10-01\n\nReported by: [PERSON]\n"
        "Host [IP] (v2.3.1.0) paged [PHONE]; card [CARD].\n"
    )


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("5555555555554444", True),
        ("378282246310005", True),
        ("79927398713", True),
        ("4111111111111112", False),
        ("79927398710", False),
        ("", False),
        ("12a4", False),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@given(st.text(alphabet=st.sampled_from("0123456789 .-:+()@abcXY\n"), max_size=120))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_pii(text)
    twice = redact_pii(once.text)
    assert twice.text == once.text
    assert twice.total == 0
