"""A bounded load test of the retriever: N concurrent clients for a fixed time or count.

Loopback only by construction of its callers (the local node or the test node); every loop is
bounded in count and time and stops by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from llmops_dagster.search.retriever import HybridRetriever
from llmops_dagster.stats import percentile


@dataclass
class LoadReport:
    clients: int
    seconds: float
    requests: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """Nearest-rank (:func:`llmops_dagster.stats.percentile`); 0.0 before any request."""
        found = percentile(self.latencies_ms, q)
        return 0.0 if found is None else found

    def summary(self) -> dict[str, float]:
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "errors": self.errors,
            "qps": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
        }


def run_load(
    retriever: HybridRetriever,
    queries: Sequence[str],
    *,
    clients: int = 4,
    duration_s: float = 5.0,
    max_requests: int = 2000,
    mode: str = "hybrid_rrf",
    k: int = 10,
) -> LoadReport:
    """Each client searches queries round-robin until the time or the request budget is spent."""
    if not queries:
        raise ValueError("run_load needs at least one query")
    lock = threading.Lock()
    report = LoadReport(clients=clients, seconds=0.0)
    deadline = time.monotonic() + duration_s
    budget = [max_requests]

    def client(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            began = time.perf_counter()
            try:
                retriever.search(queries[i % len(queries)], mode=mode, k=k)
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    report.requests += 1
                    report.latencies_ms.append(elapsed)
            except Exception as exc:  # counted and reported, never fatal to the run
                with lock:
                    report.requests += 1
                    report.errors += 1
                    if len(report.first_errors) < 5:
                        report.first_errors.append(f"{type(exc).__name__}: {exc}")
            i += 1

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client, n) for n in range(clients)]:
            future.result()
    report.seconds = time.monotonic() - started
    return report
