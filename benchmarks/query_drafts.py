"""Can the configured generator draft the training queries for the embedding model?

Issue 27 names two ways to make queries from a corpus that has none: a sentence held out of
its chunk (inverse-cloze, what ``embedding_finetune`` trains on) or a question drafted per
chunk by issue 25's golden drafter (``llmops_dagster.evaluate.golden_drafter``). This script
measures the second on BEIR SciFact before anyone spends CPU hours on it: the abstracts cut as
the pipeline cuts documents (``chunk_document`` at the corpus settings' size and overlap), a
seeded sample of ``--sample`` chunks spread over abstracts, for each the sentence the ICT recipe
holds out (``build_pairs``' seeded choice), and the configured generator asked for a question
about it (the drafter's prompt, greedy, its ``MAX_NEW_TOKENS``). A draft counts only when the
drafter's own check accepts it (``check_question``: one question, about the sentence, not a
restatement, not a repeat of another draft); otherwise the drafter would train on its template
question, which is no better than the held-out sentence itself.

Figures: drafts accepted (share), the refusal reasons, seconds per draft on this machine, and
what drafting every chunk of the corpus would take at that rate; a few replies as they came.

Usage::

    .venv/bin/python benchmarks/query_drafts.py [DATA_DIR] [--sample N] [--no-write]

Writes ``benchmarks/results/query_drafts.json`` (committed code only,
``results_file.write_results``) and prints a table.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from llmops_dagster.config import Settings, apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from results_file import DirtyCheckoutError, write_results
from retrieval_scifact import DEFAULT_DATA, product_chunks, read_jsonl

from llmops_dagster.embed.finetune_pairs import build_pairs
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.evaluate.golden_drafter import (
    MAX_NEW_TOKENS,
    PROMPT_FILE,
    DraftRequest,
    draft_with_generator,
)
from llmops_dagster.resources.models import ModelsResource
from llmops_dagster.train.raft import ChunkRecord, draft_question, spread_sample

log = logging.getLogger("query_drafts")

RESULTS = REPO_ROOT / "benchmarks" / "results" / "query_drafts.json"
#: Requests per drafter call: progress in the log (the generator batches within a call).
SLICE = 32
#: Replies kept in the results file for a reader to judge: this many accepted and as many
#: refused, the first of each in sample order (not chosen).
SAMPLES_EACH = 6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sample", type=int, default=256, help="chunks drafted for")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print only (a smoke run)")
    args = parser.parse_args(argv)
    if args.sample < 1:
        parser.error(f"--sample must be at least 1, not {args.sample}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_at_start = os.getloadavg()[0]

    settings = Settings()
    corpus = read_jsonl(args.data / "corpus.jsonl")
    tokenizer = load_embedder(settings.models.embedding_model).tokenizer
    size, overlap = settings.corpus.chunk_size_tokens, settings.corpus.chunk_overlap_tokens
    chunks = product_chunks(corpus, tokenizer, size, overlap)
    records = [
        ChunkRecord(c["chunk_id"], c["doc_id"], c["title"], c["text"], ("public",)) for c in chunks
    ]
    sample = spread_sample(
        records, min(args.sample, len(records)), args.seed, key=lambda c: (c.doc_id, c.chunk_id)
    )
    # The query sentence depends only on the chunk and the seed, so the sample's held-out
    # sentences are the ones the ICT recipe uses over the whole corpus.
    pairs = build_pairs(
        sample, None, negatives=False, seed=args.seed, keep_sentence_share=0.0
    ).pairs
    titles = {c.chunk_id: c.title for c in sample}
    requests = [
        DraftRequest(p.query, titles[p.chunk_id], draft_question(p.query, titles[p.chunk_id])[0])
        for p in pairs
    ]
    log.info("%d chunks (%d abstracts); %d sampled, %d with a held-out sentence",
             len(chunks), len(corpus), len(sample), len(requests))  # fmt: skip

    models = ModelsResource.from_settings(settings)
    started = time.perf_counter()
    generator = models.generator()
    load_seconds = time.perf_counter() - started
    questions: list[str] = []
    accepted: list[bool] = []
    replies: list[str] = []
    reasons: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(requests), SLICE):
        # Earlier drafts are passed on, so "a repeat of another draft" spans the whole sample
        # as it does in one drafter call.
        drafts = draft_with_generator(
            requests[start : start + SLICE], generator, golden_questions=questions
        )
        questions += drafts.questions
        accepted += drafts.from_generator
        replies += drafts.replies
        for why, n in drafts.fallback_reasons.items():
            reasons[why] = reasons.get(why, 0) + n
        log.info("%d/%d drafted, %d accepted", len(questions), len(requests), sum(accepted))
    seconds = time.perf_counter() - started

    per_draft = seconds / len(requests)
    result = {
        "drafted": {
            "requests": len(requests),
            "accepted": sum(accepted),
            "accepted_share": round(sum(accepted) / len(requests), 4),
            "refusal_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "seconds": round(seconds, 1),
            "seconds_per_draft": round(per_draft, 3),
            "corpus_chunks": len(chunks),
            # At this rate, a draft for every chunk (what the ICT recipe has one sentence for).
            "corpus_hours_at_this_rate": round(per_draft * len(chunks) / 3600, 2),
            "generator_load_seconds": round(load_seconds, 1),
        },
        "samples": samples(requests, replies, accepted),
        "setup": {
            "dataset": f"BEIR SciFact corpus ({len(corpus)} abstracts), no queries used",
            "chunking": f"the pipeline's chunker, {size} tokens, overlap {overlap}",
            "sample": f"{len(sample)} chunks spread over abstracts, seed {args.seed}",
            "generator": generator.model_id,
            "generator_backend": settings.models.generator_backend,
            "prompt": str(PROMPT_FILE.relative_to(REPO_ROOT)),
            "max_new_tokens": MAX_NEW_TOKENS,
            "decoding": "greedy",
            "cpu_count": os.cpu_count(),
            "load_average_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        },
    }
    print_table(result)
    if args.no_write:
        log.info("--no-write: %s not written", args.output)
        return 0
    headline = {
        "accepted_share": result["drafted"]["accepted_share"],
        "seconds_per_draft": result["drafted"]["seconds_per_draft"],
    }
    try:
        write_results(args.output, result, headline)
    except DirtyCheckoutError as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %s", args.output)
    return 0


def samples(
    requests: list[DraftRequest], replies: list[str], accepted: list[bool]
) -> list[dict[str, Any]]:
    """The first :data:`SAMPLES_EACH` accepted and refused drafts, in sample order."""
    kept: list[dict[str, Any]] = []
    for verdict in (True, False):
        rows = [
            {"sentence": r.sentence, "reply": reply, "accepted": ok}
            for r, reply, ok in zip(requests, replies, accepted, strict=True)
            if ok is verdict
        ]
        kept += rows[:SAMPLES_EACH]
    return kept


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    drafted = result["drafted"]
    table = Table(title=f"Query drafts for SciFact chunks: {result['setup']['generator']}")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_row("drafts accepted", f"{drafted['accepted']} of {drafted['requests']} "
                  f"({drafted['accepted_share']:.2%})")  # fmt: skip
    for why, n in drafted["refusal_reasons"].items():
        table.add_row(f"refused: {why}", str(n))
    table.add_row("seconds per draft", f"{drafted['seconds_per_draft']:.3f}")
    table.add_row(f"every chunk ({drafted['corpus_chunks']}) at this rate",
                  f"{drafted['corpus_hours_at_this_rate']} h")  # fmt: skip
    console = Console(width=160)
    console.print(table)
    for sample in result["samples"]:
        mark = "accepted" if sample["accepted"] else "refused"
        line = f"[{mark}] {sample['sentence'][:100]!r} → {sample['reply'][:100]!r}"
        console.print(line, markup=False)


if __name__ == "__main__":
    raise SystemExit(main())
