"""API keys: who is calling the server, as a :class:`~llmops_dagster.access.Principal`.

Keys are random (``llmk_`` + 32 bytes, URL-safe) and stored only as their SHA-256 in a JSON file
(``LLMOPS_API_KEYS``, written 0600): a leaked file does not leak keys, and a fast hash is
enough for high-entropy random secrets (slow password hashes guard guessable passwords). The
key itself is printed once, by ``llmops-dagster keys add``, and never logged, traced or stored
— the server records the key's *name*. The server re-reads the file when it changes, so a
revoked key stops working without a restart. Once running with a key file, the server fails
closed: a deleted, unreadable or malformed file rejects every key (logged) until a valid file is
back — keeping the last good keys would keep a revoked key valid by breaking the file. Without
a key file at start, authentication is off and every caller is the public principal (public
documents only).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_dagster.access import AccessError, Principal, check_group
from llmops_dagster.files import atomic_write_json

log = logging.getLogger(__name__)

KEY_PREFIX = "llmk_"
#: Members may read the operational endpoints (``GET /metrics``) when authentication is on.
OPERATOR_GROUP = "ops"


class KeyFileError(ValueError):
    """The key file is malformed, or a key operation cannot be done; the file is unchanged."""


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    groups: tuple[str, ...]
    created_at: str

    def principal(self) -> Principal:
        return Principal(self.name, frozenset(self.groups))


def _parse(path: Path) -> list[ApiKey]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        keys = [
            ApiKey(
                name=str(entry["name"]),
                sha256=str(entry["sha256"]),
                groups=tuple(check_group(g) for g in entry.get("groups", [])),
                created_at=str(entry.get("created_at", "")),
            )
            for entry in raw["keys"]
        ]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise KeyFileError(f"API key file {path} is unreadable or malformed: {exc}") from exc
    except AccessError as exc:
        raise KeyFileError(f"API key file {path}: {exc}") from exc
    if len({k.name for k in keys}) != len(keys):
        raise KeyFileError(f"API key file {path}: key names repeat")
    return keys


def _write(path: Path, keys: list[ApiKey]) -> None:
    payload = {"keys": [k.__dict__ | {"groups": list(k.groups)} for k in keys]}
    atomic_write_json(path, payload, mode=0o600)  # private from the first byte


def read_keys(path: Path) -> list[ApiKey]:
    return _parse(path) if path.is_file() else []


def add_key(path: Path, name: str, groups: list[str]) -> tuple[ApiKey, str]:
    """A new key for ``name``; returns (record, the key itself — shown once)."""
    keys = read_keys(path)
    if not name or len(name) > 100 or not name.replace("-", "").replace("_", "").isalnum():
        raise KeyFileError(f"invalid key name {name!r}: letters, digits, - and _ only")
    if any(k.name == name for k in keys):
        raise KeyFileError(f"a key named {name!r} exists: revoke it first")
    try:
        checked = tuple(sorted({check_group(g) for g in groups}))
    except AccessError as exc:
        raise KeyFileError(str(exc)) from exc
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(name, key_digest(secret), checked, datetime.now(UTC).isoformat())
    _write(path, [*keys, record])
    return record, secret


def revoke_key(path: Path, name: str) -> None:
    keys = read_keys(path)
    if not any(k.name == name for k in keys):
        raise KeyFileError(f"no key named {name!r} in {path}")
    _write(path, [k for k in keys if k.name != name])


class KeyStore:
    """The server's view of the key file, re-read when its mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: int | None = None
        self._by_digest: dict[str, ApiKey] = {}
        self.failure: str | None = None  # why every key is rejected right now (None: fine)
        if path is not None:
            if not path.is_file():
                raise KeyFileError(f"API key file {path} does not exist (LLMOPS_API_KEYS)")
            self._reload()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _reload(self) -> None:
        assert self.path is not None
        stamp = self.path.stat().st_mtime_ns
        if stamp != self._stamp:
            keys = _parse(self.path)
            self._by_digest = {k.sha256: k for k in keys}
            self._stamp = stamp

    def _refresh(self) -> None:
        """Re-read a changed file; on any failure forget every key (fail closed)."""
        try:
            self._reload()
        except (OSError, KeyFileError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if reason != self.failure:  # once per new failure, not once per request
                log.error("API key file unusable, rejecting every key until it is fixed: %s",
                          reason)  # fmt: skip
            self._by_digest, self._stamp, self.failure = {}, None, reason
            return
        if self.failure is not None:
            log.info("API key file %s is valid again: %d keys", self.path,
                        len(self._by_digest))  # fmt: skip
            self.failure = None

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key record for a presented key, or None (missing or wrong)."""
        if not presented or self.path is None:
            return None
        with self._lock:
            # Our own writes replace the file atomically (no half-written state to wait out);
            # anything else that breaks it must not leave revoked keys valid.
            self._refresh()
            digest = key_digest(presented)
            for known, record in self._by_digest.items():
                if hmac.compare_digest(known, digest):
                    return record
        return None


def presented_key(headers: Any) -> str | None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return (headers.get("x-api-key") or "").strip() or None
