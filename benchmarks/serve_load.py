"""Serving load benchmark: the real server under concurrent clients, against a direct call.

Stack (all real, all throw-away): an ``mlflow server`` process, the sample corpus indexed by the
real assets under a fresh alias on ``ELASTICSEARCH_URL`` (unset: the local node of
``llmops-dagster services up``), two registered bundles (the packaged SmolLM2 with
``--max-new-tokens``, and the extractive answerer), and ``llmops-dagster serve``.

1. ``overhead_ratio``: the golden questions one at a time, each asked twice in a row — directly
   through the same bundle's :class:`~llmops_dagster.rag.pipeline.RagPipeline` in this process
   and through ``POST /v1/answer`` — in alternating order (ABBA) so drift hits both alike.
   Ratio = server p50 (client-observed, HTTP + tracing + answer log included) ÷ direct p50
   (nearest-rank percentiles, ``llmops_dagster.stats.percentile``, like every p50/p95 here).
   Both run one torch thread.
2. Load: ``--clients`` concurrent clients send the questions round-robin until each has sent
   ``--requests-per-client`` or ``--max-seconds`` pass. Half way through (by request count),
   the champion alias moves to the extractive bundle. Every response must be a 200 naming
   exactly one bundle whose generator matches (``model_id``). The server generates one answer
   at a time (``LLMOPS_MAX_CONCURRENT_GENERATIONS=1``), so concurrent latency includes queueing.
3. ``traces_recorded``: traces of the serving experiment in the tracking server once the
   exporter has drained (polled up to 120 s), compared with the answered requests.

Writes ``benchmarks/results/serve.json`` through ``results_file.write_results`` (git sha,
``-dirty`` when the checkout has changes; the last three runs' ``overhead_ratio``, errors and
traces under ``history``) and prints a table. About 8 minutes on 2 shared cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmops_dagster.config import PROJECT_ROOT, Settings, apply_offline_env_defaults

apply_offline_env_defaults()

import httpx
from results_file import write_results
from rich.console import Console
from rich.table import Table

from llmops_dagster.stats import percentile
from llmops_dagster.tracking.mlflow_store import mlflow_client

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "serve.json"
TARGETS = {"errors": 0, "overhead_ratio_max": 1.10}
console = Console()


def golden_questions(limit: int) -> list[str]:
    path = PROJECT_ROOT / "data" / "golden" / "qa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["question"] for row in rows[:limit]]


def overhead(settings: Settings, url: str, bundle: Any, questions: list[str]) -> dict[str, Any]:
    from llmops_dagster.resources import build_bundle_pipeline, build_resources

    resources = build_resources(settings, with_dlt=False, resolve_secrets=True)
    pipeline = build_bundle_pipeline(
        resources["elasticsearch"], resources["models"], resources["mlflow"],
        bundle.bundle, bundle_uri=bundle.uri,
    )  # fmt: skip
    direct: list[float] = []
    served: list[float] = []
    with httpx.Client(timeout=300) as http:
        pipeline.answer(questions[0])  # warm both sides once
        http.post(f"{url}/v1/answer", json={"question": questions[0]}).raise_for_status()
        for i, question in enumerate(questions):
            order = ("direct", "server") if i % 2 == 0 else ("server", "direct")
            for side in order:
                started = time.perf_counter()
                if side == "direct":
                    pipeline.answer(question)
                    direct.append((time.perf_counter() - started) * 1000)
                else:
                    http.post(f"{url}/v1/answer", json={"question": question}).raise_for_status()
                    served.append((time.perf_counter() - started) * 1000)
            console.log(f"overhead {i + 1}/{len(questions)}")
    direct_p50, server_p50 = percentile(direct, 50), percentile(served, 50)
    if direct_p50 is None or server_p50 is None:
        raise ValueError("overhead: no question was timed")
    return {
        "questions": len(questions),
        "direct_p50_ms": round(direct_p50, 1),
        "server_p50_ms": round(server_p50, 1),
        "overhead_ratio": round(server_p50 / direct_p50, 4),
    }


def load(
    url: str,
    questions: list[str],
    *,
    clients: int,
    per_client: int,
    max_seconds: float,
    swap: Any,
    bundles: dict[str, Any],
) -> dict[str, Any]:
    lock = threading.Lock()
    latencies: list[float] = []
    responses: list[dict[str, Any]] = []
    errors: list[str] = []
    total = clients * per_client
    swapped = threading.Event()
    deadline = time.monotonic() + max_seconds

    def client(index: int) -> None:
        with httpx.Client(timeout=300) as http:
            for n in range(per_client):
                if time.monotonic() > deadline:
                    return
                question = questions[(index + n * clients) % len(questions)]
                started = time.perf_counter()
                try:
                    r = http.post(f"{url}/v1/answer", json={"question": question})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                        continue
                    latencies.append(elapsed)
                    responses.append(r.json())
                    done = len(responses) + len(errors)
                    console.log(f"load {done}/{total}")
                if done >= total // 2 and not swapped.is_set():
                    swapped.set()
                    swap()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    generator_of = {b.version: b.bundle.generator for b in bundles.values()}
    mixed = 0
    per_bundle: dict[str, int] = {}
    for body in responses:
        version = body["bundle"]["version"]
        per_bundle[version] = per_bundle.get(version, 0) + 1
        extractive = body["bundle"]["model_id"].startswith("extractive")
        if (generator_of.get(version) == "extractive") != extractive:
            mixed += 1
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return {
        "clients": clients,
        "requests": len(responses) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": None if p50 is None else round(p50, 1),
        "p95_ms": None if p95 is None else round(p95, 1),
        "wall_s": round(wall, 1),
        "responses_per_bundle_version": dict(sorted(per_bundle.items())),
        "responses_mixing_bundles": mixed,
        "swapped": swapped.is_set(),
    }


def count_traces(tracking_uri: str, experiment: str, expected: int, wait_s: float) -> int:
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    deadline = time.monotonic() + wait_s
    count = 0
    while True:
        count, token = 0, None
        while True:
            page = client.search_traces(
                locations=[exp.experiment_id], max_results=500, page_token=token,
                include_spans=False,
            )  # fmt: skip
            count += len(page)
            token = page.token
            if not token:
                break
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests-per-client", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=420)
    parser.add_argument("--overhead-questions", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from llmops_dagster.search.aliases import list_versions
    from llmops_dagster.search.client import make_client
    from llmops_dagster.serving.testbed import (
        index_sample_corpus,
        promote,
        register_test_bundles,
        serve_process,
        start_mlflow_server,
        stop_process,
    )

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    base = Settings()
    questions = golden_questions(max(args.overhead_questions, 20))
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mlflow_proc, tracking_uri = start_mlflow_server(tmp / "mlflow")
        alias = f"bench-serve-{uuid.uuid4().hex[:8]}"
        settings = base.override(
            home=tmp / "home",
            elasticsearch={"url": base.es_url, "index_alias": alias},
            warehouse={"duckdb_path": tmp / "home" / "warehouse.duckdb"},
            mlflow={"tracking_uri": tracking_uri},
            models={"cache_dir": base.models_cache_dir, "torch_threads": 1},
            # The load comes from one client address: the server's default per-caller rate limit
            # (60/min, burst 10) would answer 429s, which measure the limiter, not serving under
            # a swap. Limits high enough that no request of the run is limited.
            serving={
                "bundle_poll_s": 1.0,
                "rate_limit_per_minute": 100_000.0,
                "rate_limit_burst": 10_000,
            },
        )
        es = make_client(settings.cluster_spec())
        try:
            with console.status("indexing the sample corpus ..."):
                index_sample_corpus(settings, base.corpus.sample_data_dir)
            bundles = register_test_bundles(settings, llm_tokens=args.max_new_tokens, k=3)
            with console.status("starting the server ..."):
                server_cm = serve_process(settings, tmp / "serve.log")
                server = server_cm.__enter__()
            try:
                over = overhead(
                    settings, server.url, bundles["llm"], questions[: args.overhead_questions]
                )
                registry = mlflow_client(tracking_uri)
                loaded = load(
                    server.url,
                    questions,
                    clients=args.clients,
                    per_client=args.requests_per_client,
                    max_seconds=args.max_seconds,
                    swap=lambda: promote(registry, bundles["extractive"], "benchmark swap"),
                    bundles=bundles,
                )
                # the overhead phase's questions + its warm-up request + the load's successes
                answered = over["questions"] + 1 + loaded["requests"] - loaded["errors"]
                traces = count_traces(
                    tracking_uri, settings.serving.trace_experiment, answered, wait_s=120
                )
            finally:
                server_cm.__exit__(None, None, None)
        finally:
            stop_process(mlflow_proc)
            for index in list_versions(es, alias):
                es.indices.delete(index=index, ignore_unavailable=True)

    result = {
        "clients": loaded["clients"],
        "requests": loaded["requests"],
        "errors": loaded["errors"],
        "p50_ms": loaded["p50_ms"],
        "p95_ms": loaded["p95_ms"],
        "traces_recorded": traces,
        "answers_served": answered,
        "overhead_ratio": over["overhead_ratio"],
        "overhead": over,
        "load": loaded,
        "max_new_tokens": args.max_new_tokens,
        "targets": TARGETS,
        "met": {
            "errors": loaded["errors"] == 0 and loaded["responses_mixing_bundles"] == 0,
            "every_request_traced": traces == answered,
            "overhead_ratio": over["overhead_ratio"] <= TARGETS["overhead_ratio_max"],
        },
    }
    # What a person follows over time: the one ratio, and the counts that must stay exact.
    headline = {
        "overhead_ratio": result["overhead_ratio"],
        "errors": result["errors"],
        "responses_mixing_bundles": loaded["responses_mixing_bundles"],
        "traces_recorded": traces,
        "answers_served": answered,
    }
    write_results(args.out, result, headline, root=PROJECT_ROOT)
    table = Table(title="serving load (benchmarks/serve_load.py)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_row("clients × requests", f"{result['clients']} × {args.requests_per_client}", "")
    table.add_row("requests / errors", f"{result['requests']} / {result['errors']}", "0 errors")
    table.add_row("p50 / p95 ms (concurrent)", f"{result['p50_ms']} / {result['p95_ms']}", "")
    table.add_row("traces recorded / answers", f"{traces} / {answered}", "all")
    table.add_row(
        "overhead_ratio (server p50 ÷ direct p50)",
        f"{over['overhead_ratio']} ({over['server_p50_ms']} / {over['direct_p50_ms']} ms)",
        "≤ 1.10",
    )
    table.add_row("responses per bundle version", str(loaded["responses_per_bundle_version"]), "")
    table.add_row("responses mixing bundles", str(loaded["responses_mixing_bundles"]), "0")
    console.print(table)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
