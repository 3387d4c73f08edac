"""Who is asking, and which documents they may read.

Every document has an audience: the groups allowed to read it (``allowed_groups``; ``public``
when a source says nothing). A :class:`Principal` is a name and its groups; it may read a
document when the two share a group, and everyone is in ``public``. The check is not done in
Python after searching: the principal's groups become a ``terms`` filter *inside* every
Elasticsearch query — the BM25 query's ``bool.filter`` and the kNN search's own ``filter``
(a kNN post-filter would first take the nearest neighbours of everyone and leak through ranks
and counts) — so a passage outside the audience never leaves the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

PUBLIC = "public"
AUDIENCE_FIELD = "allowed_groups"
_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


class AccessError(ValueError):
    """An invalid group name or audience."""


def check_group(name: str) -> str:
    """Group names are lower-case identifiers (``hr``, ``security``, ``team:platform``)."""
    if not isinstance(name, str) or not _GROUP_RE.match(name):
        raise AccessError(
            f"invalid group name {name!r}: use lower-case letters, digits and _ . : - "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


def normalize_audience(groups: Iterable[str] | str | None) -> list[str]:
    """A document's audience as a sorted, de-duplicated list; empty/None → ``["public"]``.

    A string is one group or a comma-separated list (a SQL column or CSV cell).
    """
    if groups is None:
        return [PUBLIC]
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",")]
    cleaned = sorted({check_group(g.strip().lower()) for g in groups if g and g.strip()})
    return cleaned or [PUBLIC]


@dataclass(frozen=True)
class Principal:
    """A caller: a name (for logs and feedback) and the groups it belongs to."""

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for group in self.groups:
            check_group(group)

    @classmethod
    def public(cls) -> Principal:
        """Nobody in particular: sees public documents only."""
        return cls("anonymous", frozenset())

    @property
    def visible_groups(self) -> list[str]:
        """The audiences this principal may read (always including ``public``)."""
        return sorted(self.groups | {PUBLIC})

    def can_read(self, audience: Iterable[str]) -> bool:
        """A *document's* audience is any-of: one shared group is enough."""
        return bool(set(audience) & set(self.visible_groups))

    def can_read_all(self, groups: Iterable[str]) -> bool:
        """Text that came through several groups (an answer asked as ``hr`` from ``hr``
        passages, a training item carrying its asker's groups) is readable only by someone in
        every one of them; ``public`` (or nothing) is readable by everyone."""
        return set(normalize_audience(list(groups))) <= set(self.visible_groups)

    def filter_clause(self) -> dict[str, object]:
        """The Elasticsearch filter that keeps only documents this principal may read."""
        return {"terms": {AUDIENCE_FIELD: self.visible_groups}}
