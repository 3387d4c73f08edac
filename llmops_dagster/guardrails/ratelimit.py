"""Per-caller token buckets: a burst up to ``burst`` requests, refilled at ``rate_per_s``.

A refused request gets the seconds until its next token (``Retry-After``), never an error of
the server. Buckets of callers idle long enough to be full again are dropped, so memory stays
bounded by the callers active in the last ``burst / rate`` seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> float:
        """Take a token for ``caller``: 0.0 when allowed, else seconds to wait (> 0)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                self._prune(now)
                return 0.0
            return (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        if len(self._buckets) < 1024:
            return
        full_after = self.burst / self.rate
        for caller in [c for c, b in self._buckets.items() if now - b.updated > full_after]:
            del self._buckets[caller]


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, rounded up (HTTP's Retry-After has no fractions)."""
    return str(max(1, math.ceil(wait_s)))
