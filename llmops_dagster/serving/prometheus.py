"""Prometheus metrics of one server process (its own registry: tests start several apps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmops_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.answer_errors = Counter(
            "llmops_answer_errors", "Answers that failed, by reason", ["reason"], registry=r
        )
        self.latency = Histogram(
            "llmops_answer_latency_seconds",
            "Server-side answer latency (queue + retrieve + generate)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("llmops_tokens", "Tokens by kind", ["kind"], registry=r)
        self.feedback = Counter(
            "llmops_feedback", "Feedback received by rating", ["rating"], registry=r
        )
        self.guardrails = Counter(
            "llmops_answer_outcomes",
            "Answers by outcome: answered, prompt_injection or nothing_relevant refusals",
            ["outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "llmops_rate_limited", "Requests refused by the per-caller rate limit", registry=r
        )
        self.in_flight = Gauge("llmops_answers_in_flight", "Answers being produced", registry=r)

    def watch(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A value owned elsewhere (trace drops, bundle swaps), read at scrape time."""

        class _Collector:
            def collect(self) -> Iterator[GaugeMetricFamily]:
                yield GaugeMetricFamily(name, doc, value=float(read()))

        self.registry.register(_Collector())

    def watch_counter(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A counter owned elsewhere (the answer cache's hits), read at scrape time; exposed
        as ``<name>_total`` like the counters above."""

        class _Collector:
            def collect(self) -> Iterator[CounterMetricFamily]:
                yield CounterMetricFamily(name, doc, value=float(read()))

        self.registry.register(_Collector())

    def render(self) -> bytes:
        return generate_latest(self.registry)
