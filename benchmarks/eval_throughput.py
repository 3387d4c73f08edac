"""Evaluation throughput: batched (batched generation + concurrent DeepEval metrics) ÷ one-by-one.

Both modes answer the same golden questions with the same retriever, generator, prompt and
``max_new_tokens`` and score the same judge-free metrics:

- serial: one question per ``generate`` call, then that case's metrics measured in a plain loop
  (the cheapest one-by-one path: no DeepEval run overhead per case);
- batched: all questions through ``answer_many`` (the generator's batches, left-padded), then one
  DeepEval ``evaluate()`` with async, concurrent metric execution.

Greedy decoding should make both produce the same answers. The script checks it, so the speed-up
is not bought with different work: it counts identical answers and compares every metric both
modes aggregate (``agreement``: largest absolute difference; latency is left out, it is what
differs). If an answer or an aggregate (beyond ``--tolerance``) differs, it still writes the
results, marked ``"agrees": false``, and exits with status 1.

Retrieval is an in-memory dense retriever over the sample corpus (Markdown/text files split into
paragraph chunks, FAQ records one chunk each), so the benchmark needs no Elasticsearch node;
retrieval costs the same in both modes.

Usage: ``python benchmarks/eval_throughput.py [--cases 10] [--max-new-tokens 32] [--k 3]``
Writes ``benchmarks/results/eval_throughput.json`` through ``results_file.write_results``:
``batched_vs_serial``, ``cases_per_min`` (batched), ``agreement``, the details under
``"details"``, the git revision, and the last three runs' headline figures under ``"history"``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmops_dagster.config import apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from results_file import write_results

from llmops_dagster.config import Settings
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.evaluate.golden import load_golden
from llmops_dagster.evaluate.metrics import default_metrics
from llmops_dagster.evaluate.run import EvalCase, build_cases, evaluate_rag
from llmops_dagster.models.local import LocalTransformersGenerator, load_base_model
from llmops_dagster.models.spec import LocalModelSpec
from llmops_dagster.rag.answer import answer_many
from llmops_dagster.search.hits import Hit
from llmops_dagster.sources.source_config import default_sources_config

RESULT_PATH = ROOT / "benchmarks" / "results" / "eval_throughput.json"


class InMemoryRetriever:
    """Cosine top-k over chunk embeddings (the ``rag.answer.Retriever`` protocol)."""

    def __init__(self, chunks: list[tuple[str, str, str]], embedder: Any) -> None:
        self.chunks = chunks
        self.embedder = embedder
        self.vectors = embedder.encode([text for _, _, text in chunks])

    def search(self, query: str, *, mode: str = "dense", k: int = 5) -> list[Hit]:
        q = self.embedder.encode([query])[0]
        scores = self.vectors @ q
        top = np.argsort(-scores)[:k]
        return [
            Hit(
                f"{self.chunks[i][0]}#{i}",
                self.chunks[i][0],
                self.chunks[i][2],
                self.chunks[i][1],
                float(scores[i]),
                mode,
            )
            for i in top
        ]


def sample_chunks(sample_dir: Path, words: int = 120) -> list[tuple[str, str, str]]:
    """(doc_id, title, text) chunks of the public files: paragraphs packed to about ``words``
    words. This index has no access filter, so the sample's confidential folders (audiences of
    the default sources config) stay out of it: the benchmark answers as the public."""
    audience = default_sources_config(sample_dir).filesystem.audience_for  # type: ignore[union-attr]
    chunks: list[tuple[str, str, str]] = []
    for path in sorted(sample_dir.rglob("*")):
        rel = path.relative_to(sample_dir).as_posix()
        if audience(rel) != ["public"]:
            continue
        if path.suffix in {".md", ".txt"}:
            buffer: list[str] = []
            for para in path.read_text(encoding="utf-8").split("\n\n"):
                buffer.append(para.strip())
                if sum(len(p.split()) for p in buffer) >= words:
                    chunks.append((f"fs:{rel}", path.stem, "\n\n".join(buffer)))
                    buffer = []
            if buffer:
                chunks.append((f"fs:{rel}", path.stem, "\n\n".join(buffer)))
        elif path.name == "faq.json":
            for record in json.loads(path.read_text(encoding="utf-8")):
                text = f"{record['title']}\n{record['body']}"
                chunks.append((f"fs:{rel}#{record['id']}", record["title"], text))
    return chunks


def agreement(
    serial: dict[str, float], batched: dict[str, float], same_answers: int, n: int, tolerance: float
) -> dict[str, Any]:
    """Did both modes do the same work? Identical answers, and equal aggregates of every
    quality metric both report (latency excluded: it is what the modes are meant to change)."""
    keys = sorted(k for k in serial.keys() & batched.keys() if not k.startswith("latency"))
    diff = max((abs(serial[k] - batched[k]) for k in keys), default=0.0)
    return {
        "identical_answers": f"{same_answers}/{n}",
        "metrics_compared": keys,
        "max_aggregate_abs_diff": round(diff, 6),
        "tolerance": tolerance,
        "agrees": same_answers == n and diff <= tolerance,
    }


def run(
    cases_n: int, max_new_tokens: int, k: int, batch_size: int, tolerance: float = 1e-6
) -> dict[str, Any]:
    settings = Settings()
    golden = load_golden().subset(cases_n)
    embedder = load_embedder(
        settings.models.embedding_model,
        backend=settings.models.embedding_backend,
        cache_dir=settings.models_cache_dir,
    )
    retriever = InMemoryRetriever(sample_chunks(settings.corpus.sample_data_dir), embedder)
    spec = LocalModelSpec(
        model=settings.models.generator_model,
        gguf_file=settings.models.generator_gguf_file,
        cache_dir=settings.models_cache_dir,
        threads=settings.models.torch_threads,
    )
    loaded = load_base_model(spec)
    serial_gen = LocalTransformersGenerator(loaded, batch_size=1)
    batched_gen = LocalTransformersGenerator(loaded, batch_size=batch_size)
    metrics = default_metrics(encoder=embedder)

    def answer_fn(generator: LocalTransformersGenerator) -> Any:
        # The golden subset is public (the confidential cases are at the end of the set).
        return lambda qs, _principal: answer_many(
            qs, retriever=retriever, generator=generator, k=k, max_new_tokens=max_new_tokens
        )

    # Warm-up outside the timings (first-call allocations, tokenizer caches).
    build_cases(golden.subset(1), answer_fn(serial_gen), batch_size=1)

    started = time.perf_counter()
    serial_cases: list[EvalCase] = []
    serial_rows = []
    for item in golden.items:
        case = build_cases([item], answer_fn(serial_gen), batch_size=1)[0]
        serial_cases.append(case)
        serial_rows.append(evaluate_rag([case], metrics=metrics, engine="direct"))
    serial_s = time.perf_counter() - started

    started = time.perf_counter()
    batched_cases = build_cases(golden, answer_fn(batched_gen), batch_size=len(golden))
    gen_done = time.perf_counter()
    batched = evaluate_rag(batched_cases, metrics=metrics, engine="deepeval", max_concurrent=16)
    batched_s = time.perf_counter() - started

    serial_means = {
        key: float(np.mean([r.aggregates[key] for r in serial_rows])) for key in batched.metric_keys
    }
    same_answers = sum(
        a.actual_output == b.actual_output for a, b in zip(serial_cases, batched_cases, strict=True)
    )
    n = len(golden)
    return {
        "batched_vs_serial": round(serial_s / batched_s, 2),
        "cases_per_min": round(n / batched_s * 60, 2),
        "agreement": agreement(serial_means, dict(batched.aggregates), same_answers, n, tolerance),
        "details": {
            "cases": n,
            "serial_seconds": round(serial_s, 2),
            "batched_seconds": round(batched_s, 2),
            "batched_generation_seconds": round(gen_done - started, 2),
            "batched_metrics_seconds": round(batched_s - (gen_done - started), 2),
            "serial_cases_per_min": round(n / serial_s * 60, 2),
            "max_new_tokens": max_new_tokens,
            "k": k,
            "batch_size": batch_size,
            "batched_aggregates": {k_: round(v, 4) for k_, v in batched.aggregates.items()},
            "serial_aggregates": {k_: round(v, 4) for k_, v in serial_means.items()},
            "golden_version": golden.short_version,
            "generator": loaded.source.model_id,
            "device": loaded.device,
            "torch_threads": spec.threads,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--output", type=Path, default=RESULT_PATH)
    args = parser.parse_args()
    result = run(args.cases, args.max_new_tokens, args.k, args.batch_size, args.tolerance)
    headline = {
        "batched_vs_serial": result["batched_vs_serial"],
        "cases_per_min": result["cases_per_min"],
        "agrees": result["agreement"]["agrees"],
    }
    written = write_results(args.output, result, headline)
    print(json.dumps(written, indent=2))
    if not result["agreement"]["agrees"]:
        print("batched and serial runs disagree: see 'agreement'", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
