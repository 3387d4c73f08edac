"""Registry polling for the evaluation sensor: snapshot the registry, diff against a cursor.

Why a cursor of *what was seen* (all version numbers, each alias's target and a per-alias change
counter) instead of "the last version number": versions can be registered out of order by
concurrent writers, and aliases move back and forth. Every change yields exactly one event,
and each event carries a ``run_key`` that is unique per change — so Dagster's run-key
de-duplication also protects against a tick that is retried after launching its runs. An alias
that moves 2 → 3 → 2 → 3 yields three events with three distinct keys (a key built from the
alias and version alone would silently drop the third).

First tick (no cursor): ``first_tick="latest"`` (default) emits the newest existing version
only — evaluate what is there now, not the whole history; ``"all"`` emits every version;
``"none"`` records a baseline. Aliases that exist on the first tick are baseline, not changes.

Aliases in ``ignore_aliases`` (default ``champion``) are tracked but emit nothing: the gate
moves ``champion`` itself, and re-evaluating what was just promoted would loop.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mlflow import MlflowClient

CURSOR_FORMAT = 1


@dataclass(frozen=True)
class RegistryEvent:
    """One change: ``kind`` = ``new_version`` or ``alias_moved``."""

    kind: Literal["new_version", "alias_moved"]
    model_name: str
    version: str
    alias: str | None = None
    previous_version: str | None = None
    sequence: int = 0

    @property
    def run_key(self) -> str:
        if self.kind == "new_version":
            return f"{self.model_name}/v{self.version}"
        return f"{self.model_name}@{self.alias}#{self.sequence}->v{self.version}"

    def describe(self) -> str:
        if self.kind == "new_version":
            return f"new version {self.version} of {self.model_name}"
        was = f" (was {self.previous_version})" if self.previous_version else ""
        return f"alias {self.alias} of {self.model_name} moved to {self.version}{was}"


def registry_snapshot(client: MlflowClient, model_name: str) -> dict[str, Any]:
    """``{"model": name, "versions": ["1", "2"], "aliases": {"champion": "2"}}``.

    A model that is not registered yet is an empty snapshot, not an error: the sensor starts
    before anything is trained.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {"model": model_name, "versions": [], "aliases": {}}
        raise
    versions: list[str] = []
    page_token: str | None = None
    while True:
        page = client.search_model_versions(
            f"name = '{model_name}'", max_results=1000, page_token=page_token
        )
        versions.extend(str(mv.version) for mv in page)
        page_token = page.token
        if not page_token:
            break
    return {
        "model": model_name,
        "versions": sorted(set(versions), key=int),
        "aliases": {str(a): str(v) for a, v in sorted((model.aliases or {}).items())},
    }


def _load_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    data = json.loads(cursor)
    if data.get("format") != CURSOR_FORMAT:
        raise ValueError(f"registry cursor format {data.get('format')!r} is not {CURSOR_FORMAT}")
    return data


def diff_snapshots(
    old_cursor: str | None,
    new: Mapping[str, Any],
    *,
    first_tick: Literal["latest", "all", "none"] = "latest",
    ignore_aliases: Collection[str] = ("champion",),
) -> tuple[list[RegistryEvent], str]:
    """Events for what changed since ``old_cursor`` and the cursor to store (a JSON string).

    Pure: the same inputs give the same events, so a sensor that re-runs a tick (same old
    cursor, same registry) re-emits the same run keys, which Dagster de-duplicates.
    """
    model = str(new["model"])
    versions = [str(v) for v in new.get("versions", [])]
    aliases = {str(a): str(v) for a, v in (new.get("aliases") or {}).items()}
    old = _load_cursor(old_cursor)
    events: list[RegistryEvent] = []
    if old is None:
        # First tick: existing versions per policy; existing aliases are the baseline.
        ordered = sorted(versions, key=int)
        chosen = {"latest": ordered[-1:], "all": ordered, "none": []}[first_tick]
        events.extend(RegistryEvent("new_version", model, v) for v in chosen)
        sequences = dict.fromkeys(aliases, 0)
    else:
        if old.get("model") != model:
            raise ValueError(f"cursor is for model {old.get('model')!r}, snapshot for {model!r}")
        seen = set(old.get("versions", []))
        events.extend(
            RegistryEvent("new_version", model, v)
            for v in sorted(versions, key=int)
            if v not in seen
        )
        old_aliases: dict[str, str] = old.get("aliases", {})
        sequences = dict(old.get("alias_sequences", {}))
        for alias, version in sorted(aliases.items()):
            if old_aliases.get(alias) == version:
                continue
            sequences[alias] = int(sequences.get(alias, 0)) + 1
            if alias in ignore_aliases:
                continue
            events.append(
                RegistryEvent(
                    "alias_moved",
                    model,
                    version,
                    alias=alias,
                    previous_version=old_aliases.get(alias),
                    sequence=sequences[alias],
                )
            )
        # Sequences survive an alias's removal, so a re-created alias never reuses a run key.
    cursor = {
        "format": CURSOR_FORMAT,
        "model": model,
        # Versions ever seen (a deleted version stays seen: its number is never reused).
        "versions": sorted(set(versions) | set((old or {}).get("versions", [])), key=int),
        "aliases": dict(sorted(aliases.items())),
        "alias_sequences": dict(sorted(sequences.items())),
    }
    return events, json.dumps(cursor, sort_keys=True, separators=(",", ":"))
