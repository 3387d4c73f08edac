"""The bundle the server answers with, and the swap when the ``champion`` alias moves.

A request reads :attr:`BundleHolder.current` once and answers entirely with that
:class:`ServedBundle` (pipeline, versions, trace context): the reference is replaced in one
assignment after the new bundle is fully loaded, so no request fails or mixes two bundles during
a swap, and no request waits for a load. A failed load keeps the old bundle and is counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmops_dagster.rag.bundle import BundleVersion
from llmops_dagster.serving.answer_log import now_iso
from llmops_dagster.serving.tracing import TraceContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedBundle:
    pipeline: Any  # RagPipeline (answer(question, filters=, observer=))
    version: BundleVersion | None  # None: no champion yet, the base model answers
    context: TraceContext
    local: bool  # generated in this process (no per-token price)
    loaded_at: str = field(default_factory=now_iso)

    @property
    def uri(self) -> str | None:
        return self.version.uri if self.version else None

    @property
    def number(self) -> str | None:
        return self.version.version if self.version else None


Lookup = Callable[[], BundleVersion | None]
Loader = Callable[[BundleVersion | None], ServedBundle]


class BundleHolder:
    """Holds the served bundle; :meth:`refresh` (or the poll thread) follows the alias."""

    def __init__(self, lookup: Lookup, loader: Loader, *, poll_s: float = 10.0) -> None:
        self._lookup = lookup
        self._loader = loader
        self.poll_s = poll_s
        self._current: ServedBundle | None = None
        self._refresh_lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0
        #: Called with the new bundle after each swap (the answer cache empties itself); a
        #: listener's failure is logged and never undoes or fails the swap.
        self.on_swap: list[Callable[[ServedBundle], None]] = []
        self.load_errors = 0
        self.last_error: str | None = None  # for the log; may hold URLs
        self.last_error_kind: str | None = None  # the exception type: what /healthz shows

    @property
    def current(self) -> ServedBundle:
        served = self._current
        if served is None:
            raise RuntimeError("no bundle loaded yet: call refresh() first")
        return served

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def refresh(self) -> bool:
        """Load and swap in the alias's bundle if it changed; True when a swap happened."""
        with self._refresh_lock:
            wanted = self._lookup()
            current = self._current
            wanted_uri = wanted.uri if wanted else None
            if current is not None and current.uri == wanted_uri:
                return False
            served = self._loader(wanted)
            self._current = served  # the swap: one reference assignment
            if current is not None:
                self.swaps += 1
                log.info("now serving %s (was %s)", wanted_uri or "the base model", current.uri)
                for listener in list(self.on_swap):
                    try:
                        listener(served)
                    except Exception:
                        log.exception("a bundle-swap listener failed")
            return True

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception as exc:  # keep serving the loaded bundle whatever went wrong
                self.load_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.last_error_kind = type(exc).__name__
                log.warning("champion refresh failed, still serving the loaded bundle: %s", exc)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="bundle-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
