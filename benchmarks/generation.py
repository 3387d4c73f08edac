"""Generation speed of an LLM-bundle evaluation: today's path ÷ the #24 path, change by change.

Every variant answers the same golden prompts (retrieved once, the ``rag_answer`` template, the
base SmolLM2 generator, greedy). Variants are cumulative, each adding one change to the one
before it:

1. ``today``: what the evaluation did before #24 — one torch thread, the old evaluation budget
   of ``--old-max-new-tokens`` (32), one prompt per ``generate`` call, no prefix cache;
2. ``threads``: every core (``torch.set_num_threads``, set in this process before the variant);
3. ``length``: the answer budget sized to the task — the ``--length-percentile`` (90th) of the
   golden reference answers' lengths in generator tokens (they are one sentence), unless
   ``--task-max-new-tokens`` is given;
4. ``prefix_cache``: the shared prompt prefix's KV cache (``models/prefix_cache.py``);
5. ``batching``: ``--batch-size`` prompts per ``generate`` call, in the caller's order;
6. ``length_order``: the call's prompts ordered by token length before they are cut into
   batches (a batch pads every row to its longest; on CPU padding is prefill paid for nothing);
7. ``attention``: grouped-query attention reading the shared key/value heads in place
   (``models/attention.py``; transformers' ``sdpa`` copies them for every masked batch). Every
   earlier variant runs with transformers' own ``sdpa``;
8. ``parallel_batches``: the call's batches side by side, one torch thread each, as many at a
   time as there are cores, cut into a multiple of that many batches
   (``LocalTransformersGenerator._run_batches``). Every earlier variant runs its batches one
   after another on every core. The batched chain (5–8) is kept only if its last variant
   measured faster than ``prefix_cache``; ``reuse`` builds on the faster of the two and
   ``batching_kept`` says which (a chain not kept has a share of 0);
9. ``reuse``: answer reuse (``evaluate/answer_reuse.py``). An evaluation is a paired
   comparison: each golden case is answered by the candidate and by the baseline bundle. Before
   reuse both sides were generated; with it, an unchanged baseline's recorded answers are read
   back. The cost per case of every earlier variant is therefore 2 × its measured generation
   seconds per case (both sides run the same generator on the same prompts: greedy, the same
   work), and of ``reuse`` 1 × (the baseline side's read-back is not generation and is counted
   as 0 here: a lookup of recorded answers, milliseconds next to seconds of generation).

Reported: seconds per golden case of each variant (paired cost), each change's share of the
total saving (negative when a change made things slower), the final ratio today ÷ new, and
agreement with today's answers: the fraction of identical strings for variants with today's
prompts and decoding (``threads``), and for the shorter budget onwards the fraction whose answer
is a prefix of today's (the common prefix agrees); ``identical_to_length``: whether the prefix
cache, batching, length-order, attention and parallel variants give exactly the ``length``
variant's answers (they must: greedy, and none of them changes a row's tokens, positions or
mask).
Only generation is timed (retrieval is the same for every variant, done once beforehand).

Usage: ``python benchmarks/generation.py [--cases 24] [--batch-size 8] [--k 3]``. Writes
``benchmarks/results/generation.json`` through ``results_file.write_results`` (committed code
only; ``--output`` elsewhere for a development run of uncommitted code is refused all the same,
``--no-write`` prints the table and the JSON without writing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from llmops_dagster.config import apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from eval_throughput import InMemoryRetriever, sample_chunks
from results_file import write_results

from llmops_dagster.config import Settings
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.evaluate.golden import load_golden, reference_token_budget
from llmops_dagster.models.attention import use_gqa_attention
from llmops_dagster.models.local import LocalTransformersGenerator, load_base_model
from llmops_dagster.models.spec import LocalModelSpec
from llmops_dagster.rag.defaults import EVALUATION_MAX_NEW_TOKENS
from llmops_dagster.rag.prompts import load_prompt

RESULT_PATH = ROOT / "benchmarks" / "results" / "generation.json"
CHANGES = (
    "threads",
    "length",
    "prefix_cache",
    "batching",
    "length_order",
    "attention",
    "parallel_batches",
    "reuse",
)
#: The batched chain: kept (or not) as a whole, see the module docstring.
BATCHED = ("batching", "length_order", "attention", "parallel_batches")


def prefix_agreement(answers: list[str], today: list[str]) -> float:
    """Fraction of answers that are a prefix of today's (a shorter budget cut them earlier)."""
    return round(sum(b.startswith(a) for a, b in zip(answers, today, strict=True)) / len(today), 4)


def identical(answers: list[str], other: list[str]) -> float:
    return round(sum(a == b for a, b in zip(answers, other, strict=True)) / len(other), 4)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    settings = Settings()
    golden_all = load_golden()
    golden = golden_all.subset(args.cases)
    embedder = load_embedder(
        settings.models.embedding_model,
        backend=settings.models.embedding_backend,
        cache_dir=settings.models_cache_dir,
    )
    retriever = InMemoryRetriever(sample_chunks(settings.corpus.sample_data_dir), embedder)
    template = load_prompt()
    prompts = [
        template.messages(item.question, retriever.search(item.question, k=args.k))
        for item in golden.items
    ]
    cores = os.cpu_count() or 1
    loaded = load_base_model(
        LocalModelSpec(
            model=settings.models.generator_model,
            gguf_file=settings.models.generator_gguf_file,
            cache_dir=settings.models_cache_dir,
            threads=1,
        )
    )
    references = [i.reference_answer for i in golden_all.items if i.reference_answer]
    task_tokens = args.task_max_new_tokens or reference_token_budget(
        loaded.tokenizer, references, args.length_percentile
    )

    def measure(
        threads: int,
        max_new_tokens: int,
        batch_size: int,
        prefix_cache: bool,
        *,
        order_by_length: bool = False,
        gqa: bool = False,
        parallel: bool = False,
    ) -> dict:
        torch.set_num_threads(threads)
        if gqa:
            use_gqa_attention(loaded.model)
        else:
            loaded.model.set_attn_implementation("sdpa")
        # A new generator per variant: a prefix cache learnt by an earlier one is not reused.
        generator = LocalTransformersGenerator(
            loaded,
            batch_size=batch_size,
            prefix_cache=prefix_cache,
            order_by_length=order_by_length,
            parallel_batches=parallel,
        )
        started = time.perf_counter()
        out = generator.generate(prompts, max_new_tokens=max_new_tokens)
        seconds = time.perf_counter() - started
        return {
            "threads": threads,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "prefix_cache": prefix_cache,
            "order_by_length": order_by_length,
            "gqa_attention": gqa,
            "parallel_batches": parallel,
            "generation_seconds": round(seconds, 3),
            "answers": [g.text for g in out],
            "completion_tokens": int(sum(g.completion_tokens for g in out)),
            "prompt_tokens": int(sum(g.prompt_tokens for g in out)),
        }

    # Warm-up outside the timings (first-call allocations), at both thread counts.
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        LocalTransformersGenerator(loaded, batch_size=1, prefix_cache=False).generate(
            prompts[:1], max_new_tokens=4
        )

    n = len(prompts)
    runs: dict[str, dict[str, Any]] = {}
    runs["today"] = measure(1, args.old_max_new_tokens, 1, False)
    runs["threads"] = measure(cores, args.old_max_new_tokens, 1, False)
    runs["length"] = measure(cores, task_tokens, 1, False)
    runs["prefix_cache"] = measure(cores, task_tokens, 1, True)
    runs["batching"] = measure(cores, task_tokens, args.batch_size, True)
    runs["length_order"] = measure(cores, task_tokens, args.batch_size, True, order_by_length=True)
    runs["attention"] = measure(
        cores, task_tokens, args.batch_size, True, order_by_length=True, gqa=True
    )
    runs["parallel_batches"] = measure(
        cores, task_tokens, args.batch_size, True, order_by_length=True, gqa=True, parallel=True
    )
    batching_kept = (
        runs["parallel_batches"]["generation_seconds"] < runs["prefix_cache"]["generation_seconds"]
    )
    best = runs["parallel_batches"] if batching_kept else runs["prefix_cache"]

    # Paired cost per golden case: both sides generated, except with reuse (baseline read back).
    variants: list[dict[str, Any]] = []
    for name in ("today", *CHANGES[:-1]):
        r = runs[name]
        variants.append(
            {
                "variant": name,
                "sides_generated": 2,
                "seconds_per_case": round(2 * r["generation_seconds"] / n, 4),
                **{k: v for k, v in r.items() if k != "answers"},
            }
        )
    variants.append(
        {
            "variant": "reuse",
            "sides_generated": 1,
            "seconds_per_case": round(best["generation_seconds"] / n, 4),
            "builds_on": "parallel_batches" if batching_kept else "prefix_cache",
            **{k: v for k, v in best.items() if k != "answers"},
        }
    )
    today_answers = runs["today"]["answers"]
    length_answers = runs["length"]["answers"]
    for v in variants:
        answers = runs[v["variant"]]["answers"] if v["variant"] in runs else best["answers"]
        v["identical_to_today"] = identical(answers, today_answers)
        v["prefix_of_today"] = prefix_agreement(answers, today_answers)
        if v["variant"] in {"prefix_cache", *BATCHED, "reuse"}:
            v["identical_to_length"] = identical(answers, length_answers)

    cost = {v["variant"]: v["seconds_per_case"] for v in variants}
    total_saving = cost["today"] - cost["reuse"]
    previous = "today"
    shares: dict[str, float] = {}
    for name in CHANGES:
        # Batched chain not kept: reuse is measured against prefix_cache, its shares are 0.
        counted = name not in BATCHED or batching_kept
        before = cost[previous]
        after = cost[name] if counted else before
        shares[name] = round((before - after) / total_saving, 4) if total_saving else 0.0
        previous = name if counted else previous
    ratio = round(cost["today"] / cost["reuse"], 2) if cost["reuse"] else float("inf")
    return {
        "today_vs_new": ratio,
        "seconds_per_case": cost,
        "share_of_saving": shares,
        "batching_kept": batching_kept,
        "agreement": {
            "threads_identical_to_today": variants[1]["identical_to_today"],
            "length_prefix_of_today": variants[2]["prefix_of_today"],
            "prefix_cache_identical_to_length": variants[3]["identical_to_length"],
            "batching_identical_to_length": variants[4]["identical_to_length"],
            "length_order_identical_to_length": variants[5]["identical_to_length"],
            "attention_identical_to_length": variants[6]["identical_to_length"],
            "parallel_batches_identical_to_length": variants[7]["identical_to_length"],
            "new_prefix_of_today": variants[-1]["prefix_of_today"],
        },
        "variants": variants,
        "details": {
            "cases": n,
            "k": args.k,
            "old_max_new_tokens": args.old_max_new_tokens,
            "task_max_new_tokens": task_tokens,
            "task_budget_rule": (
                "--task-max-new-tokens"
                if args.task_max_new_tokens
                else f"p{args.length_percentile:g} of {len(references)} golden references"
            ),
            "evaluation_max_new_tokens_now": EVALUATION_MAX_NEW_TOKENS,
            "batch_size": args.batch_size,
            "cores": cores,
            "golden_version": golden.short_version,
            "generator": loaded.source.model_id,
            "device": loaded.device,
            "timed": "generation only (retrieval done once, before the variants)",
            "reuse_model": "baseline side's recorded answers read back: counted as 0 s",
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch": torch.__version__,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Evaluation generation: today ÷ new = {result['today_vs_new']}")
    for column in (
        "variant",
        "threads",
        "tokens",
        "batch",
        "prefix",
        "order",
        "gqa",
        "side by side",
    ):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for column in ("sides", "s/case"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for column in ("share", "= today", "prefix of today"):
        table.add_column(column, justify="right")
    shares = result["share_of_saving"]
    for v in result["variants"]:
        share = shares.get(v["variant"])
        table.add_row(
            v["variant"],
            str(v["threads"]),
            str(v["max_new_tokens"]),
            str(v["batch_size"]),
            "yes" if v["prefix_cache"] else "no",
            "length" if v["order_by_length"] else "given",
            "yes" if v["gqa_attention"] else "no",
            "yes" if v["parallel_batches"] else "no",
            str(v["sides_generated"]),
            f"{v['seconds_per_case']:.3f}",
            "" if share is None else f"{share:.1%}",
            f"{v['identical_to_today']:.0%}",
            f"{v['prefix_of_today']:.0%}",
        )
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--old-max-new-tokens", type=int, default=32)
    parser.add_argument("--task-max-new-tokens", type=int, default=None)
    parser.add_argument("--length-percentile", type=float, default=90.0)
    parser.add_argument("--output", type=Path, default=RESULT_PATH)
    parser.add_argument("--no-write", action="store_true", help="print only (uncommitted code)")
    args = parser.parse_args()
    result = run(args)
    print_table(result)
    if args.no_write:
        print(json.dumps(result, indent=2))
        return
    headline = {
        "today_vs_new": result["today_vs_new"],
        "seconds_per_case_new": result["seconds_per_case"]["reuse"],
        "prefix_cache_identical": result["agreement"]["prefix_cache_identical_to_length"],
    }
    written = write_results(args.output, result, headline)
    print(json.dumps({k: written[k] for k in ("today_vs_new", "git_sha", "history")}, indent=2))


if __name__ == "__main__":
    main()
