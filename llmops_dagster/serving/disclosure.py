"""Who may read a served answer, and what is written where they are not the readers.

An answer's *audience* is the set of groups its text came through: the asker's groups (beyond
``public``: their question may itself be confidential) and the audiences of the passages
retrieved for it (the ranked list the ``retrieve`` span sees). Reading the answer needs every
one of them (:meth:`~llmops_dagster.access.Principal.can_read_all`); ``["public"]`` means
anyone. An answer is *restricted* when its audience is anything but public.

Where the readers cannot be enforced (MLflow traces: every reader of the trace experiment sees
every trace; the warehouse tables; Dagster metadata), a restricted answer leaves only ids,
numbers, the bundle and the audience: its question, answer, passages, corrections and comments
stay in the serving store (SQLite on the server host), and each withheld text is replaced by
:func:`withheld`, which names the audience so a reader knows where the text is and who may ask
for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmops_dagster.access import AUDIENCE_FIELD, PUBLIC, Principal, normalize_audience

PUBLIC_AUDIENCE: list[str] = [PUBLIC]


def hit_audience(hit: Any) -> list[str]:
    """A retrieved passage's audience from its metadata (the index's ``allowed_groups``);
    unset is public, as everywhere in the pipeline (:func:`~llmops_dagster.access.
    normalize_audience`)."""
    metadata = getattr(hit, "metadata", None)
    value = metadata.get(AUDIENCE_FIELD) if isinstance(metadata, Mapping) else None
    return normalize_audience(value)


def answer_audience(principal: Principal, passages: Iterable[Sequence[str]] = ()) -> list[str]:
    """The groups an answer came through: the asker's (without ``public``), and for each
    non-public passage the group the asker read it through (all its groups if none matches,
    which the search filter makes impossible — then nobody short of all of them reads it)."""
    groups = set(principal.groups) - {PUBLIC}
    for audience in passages:
        allowed = set(normalize_audience(list(audience)))
        if PUBLIC in allowed:
            continue
        groups |= (allowed & principal.groups) or allowed
    return sorted(groups) or list(PUBLIC_AUDIENCE)


def is_restricted(audience: Sequence[str] | None) -> bool:
    return list(audience or PUBLIC_AUDIENCE) != PUBLIC_AUDIENCE


def withheld(audience: Sequence[str]) -> str:
    """What stands in for a restricted text outside the serving store."""
    return f"[withheld: audience {','.join(audience)}]"


def audience_from_row(audience: Sequence[str] | None, asker_groups: Sequence[str]) -> list[str]:
    """A stored answer's audience; rows written before it was recorded fall back to the
    asker's groups (the search filter let them retrieve nothing beyond those)."""
    if audience:
        return normalize_audience(list(audience))
    return sorted(set(asker_groups) - {PUBLIC}) or list(PUBLIC_AUDIENCE)
