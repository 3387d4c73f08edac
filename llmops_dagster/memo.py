"""One process-wide, thread-safe cache for expensive objects (models, tokenizers, encoders).

Why one helper: several loaders (generator base models, LoRA adapters, embedders, tokenizers,
lm-format-enforcer tables) each want "build once per key per process, even when two threads
ask at once". A ``ProcessCache`` is that rule in one place: the builder runs under a per-key
lock, so two callers of the same key wait for one load, while different keys load in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class ProcessCache(Generic[V]):
    """``get(key, build)`` returns the cached value or builds it exactly once."""

    def __init__(self, name: str, *, max_entries: int | None = None) -> None:
        self.name = name
        #: Oldest entries are dropped beyond this (None: unbounded).
        self.max_entries = max_entries
        self._values: dict[Hashable, V] = {}
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        with self._lock:
            if key in self._values:
                return self._values[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = build()
            with self._lock:
                self._values[key] = value
                self._key_locks.pop(key, None)
                while self.max_entries is not None and len(self._values) > self.max_entries:
                    self._values.pop(next(iter(self._values)))
            return value

    def get_for(self, obj: object, build: Callable[[], Any]) -> Any:
        """A value per live object (e.g. per tokenizer instance), keyed by identity.

        The object is kept alongside its value, so its ``id`` cannot be reused by another
        object while the entry lives.
        """
        entry: Any = self.get(("id", id(obj)), lambda: (obj, build()))  # type: ignore[arg-type]
        return entry[1]

    def clear(self) -> None:
        """Forget every value (tests, or to free memory in a long-lived process)."""
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values
