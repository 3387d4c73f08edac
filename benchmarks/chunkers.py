"""Measure candidate chunkers on a real corpus with the embedding model's tokenizer.

Why this exists: the chunker decides what the index can ever retrieve, so the choice of library
was made by measurement, not by reputation. Every candidate gets the same tokenizer (the
embedding model's, counted without special tokens), the same budget and the same overlap, and
is scored on:

* ``max_tok`` / ``over``  - the largest chunk and how many chunks exceed the budget (must be 0:
  the model silently truncates anything longer, so the tail of an over-long chunk is invisible);
* ``sent_end``            - fraction of chunks that end at a sentence end (or the end of the
  document), a proxy for "does not cut a thought in half";
* ``fill``                - mean tokens / budget over chunks that are not a document's last one
  (the last chunk is short by nature), i.e. how much of the model's window is used;
* ``chunks``              - how many chunks (fewer = cheaper to embed and index);
* ``docs/s``              - throughput on this machine, one process.

Usage::

    .venv/bin/python benchmarks/chunkers.py [CORPUS[:GROUP] ...] \
        [--limit 2000] [--chunk-size 200] [--overlap 32]

Each ``CORPUS`` is a JSONL file (``text`` field, ``title`` optional) or a folder of
``.md``/``.txt`` files; ``:GROUP`` (default ``--group``, 1) concatenates GROUP records into one
Markdown document with ``## title`` headings, to exercise long, structured inputs. Without
arguments one run measures the three inputs the choice was made on: SciFact abstracts one by one
(``../shared/bench/scifact/corpus.jsonl:1``), ten to a document (``…:10``) and the sample corpus
(``data/sample:1``). Every input of a run goes into ``benchmarks/results/chunkers.json`` through
``results_file.write_results`` (git sha, the last three runs' headline under ``history``); a
run replaces the whole file, so it never mixes inputs measured on different code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from results_file import write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
SCIFACT = ROOT.parent / "shared" / "bench" / "scifact" / "corpus.jsonl"
DEFAULT_INPUTS = (f"{SCIFACT}:1", f"{SCIFACT}:10", f"{ROOT / 'data' / 'sample'}:1")
#: The project's chunker and the library it is compared with in the headline (the best of the
#: libraries on quality, see llmops_dagster/text/chunking.py).
PROJECT_CHUNKER = "llmops_dagster chunk_document"
REFERENCE_CHUNKER = "semantic-text-splitter (Text)"


def load_corpus(path: Path, limit: int, group: int) -> list[str]:
    records: list[tuple[str, str]] = []
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in {".md", ".txt", ".markdown"} and file.is_file():
                records.append((file.stem, file.read_text(encoding="utf-8", errors="replace")))
    else:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if row.get("text"):
                    records.append((row.get("title", ""), row["text"]))
    records = records[:limit]
    if group <= 1:
        return [text for _, text in records]
    docs = []
    for start in range(0, len(records), group):
        part = records[start : start + group]
        docs.append("\n\n".join(f"## {title}\n\n{text}" for title, text in part))
    return docs


def make_candidates(
    tokenizer: Any, chunk_size: int, overlap: int
) -> tuple[dict[str, Callable], Callable[[str], int]]:
    import semantic_text_splitter as sts
    import semchunk
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from tokenizers import Tokenizer

    # The backend tokenizer of this model ships with truncation (128) and padding enabled;
    # a copy without them counts the whole text.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()

    def count(text: str) -> int:
        return len(backend.encode(text, add_special_tokens=False).ids)

    text_splitter = sts.TextSplitter.from_huggingface_tokenizer(
        backend, chunk_size, overlap=overlap
    )
    md_splitter = sts.MarkdownSplitter.from_huggingface_tokenizer(
        backend, chunk_size, overlap=overlap
    )
    semchunker = semchunk.chunkerify(count, chunk_size)
    langchain = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=chunk_size, chunk_overlap=overlap
    )

    def plain(text: str) -> list[str]:
        """Baseline: sentences packed greedily, sentence-level overlap, no hard split."""
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n{2,}", text) if s.strip()]
        chunks: list[str] = []
        current: list[tuple[str, int]] = []
        for sentence in sentences:
            n = count(sentence)
            if current and sum(c for _, c in current) + n > chunk_size:
                chunks.append(" ".join(s for s, _ in current))
                kept: list[tuple[str, int]] = []
                for item in reversed(current):
                    if sum(c for _, c in kept) + item[1] > overlap:
                        break
                    kept.insert(0, item)
                current = kept
            current.append((sentence, n))
        if current:
            chunks.append(" ".join(s for s, _ in current))
        return chunks

    return {
        "semantic-text-splitter (Text)": text_splitter.chunks,
        "semantic-text-splitter (Markdown)": md_splitter.chunks,
        "semchunk": lambda text: semchunker(text, overlap=overlap),
        "langchain RecursiveCharacter": langchain.split_text,
        "plain sentence packer": plain,
    }, count


def measure(
    name: str, chunker: Callable, docs: list[str], count: Callable, chunk_size: int
) -> dict[str, Any]:
    started = time.perf_counter()
    outputs = [chunker(doc) for doc in docs]
    elapsed = time.perf_counter() - started
    sizes: list[int] = []
    fills: list[float] = []
    ends = 0
    total = 0
    for chunks in outputs:
        for index, chunk in enumerate(chunks):
            n = count(chunk)
            sizes.append(n)
            total += 1
            last = index == len(chunks) - 1
            if last or _SENTENCE_END.search(chunk.rstrip()):
                ends += 1
            if not last:
                fills.append(n / chunk_size)
    return {
        "chunker": name,
        "docs_per_s": round(len(docs) / elapsed, 1),
        "seconds": round(elapsed, 3),
        "chunks": total,
        "max_tokens": max(sizes) if sizes else 0,
        "over_limit": sum(1 for n in sizes if n > chunk_size),
        "sentence_end_frac": round(ends / total, 3) if total else 0.0,
        "fill_non_last": round(statistics.fmean(fills), 3) if fills else 0.0,
        "mean_tokens": round(statistics.fmean(sizes), 1) if sizes else 0.0,
    }


def parse_input(spec: str, default_group: int) -> tuple[Path, int]:
    """``CORPUS[:GROUP]`` -> (path, group); a spec without a numeric ``:GROUP`` suffix takes
    ``default_group``."""
    path, sep, group = spec.rpartition(":")
    if not (sep and path and group.isdigit()):
        path, group = spec, str(default_group)
    if int(group) < 1:
        raise SystemExit(f"input {spec!r}: GROUP must be >= 1, got {group}")
    return Path(path), int(group)


def input_label(path: Path, limit: int, group: int) -> str:
    return f"{path.name}:limit={limit}:group={group}"


def headline_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The project's chunker on one input: the budget kept (``over_limit`` must be 0), where its
    chunks end, how full they are, and its speed relative to the reference library measured on
    the same documents in the same run (seconds ÷ seconds, so the docs count cancels)."""
    by_name = {row["chunker"]: row for row in rows}
    ours, reference = by_name[PROJECT_CHUNKER], by_name[REFERENCE_CHUNKER]
    return {
        "over_limit": ours["over_limit"],
        "sentence_end_frac": ours["sentence_end_frac"],
        "fill_non_last": ours["fill_non_last"],
        "speed_vs_reference": round(reference["seconds"] / ours["seconds"], 3)
        if ours["seconds"]
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="CORPUS[:GROUP]",
        default=list(DEFAULT_INPUTS),
        help="JSONL file or folder, optionally :GROUP records per document "
        "(default: SciFact :1 and :10, data/sample :1)",
    )
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--group", type=int, default=1, help="GROUP of inputs that name none")
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/chunkers.json")
    args = parser.parse_args()
    inputs = [parse_input(spec, args.group) for spec in args.inputs]
    labels = [input_label(path, args.limit, group) for path, group in inputs]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"inputs measured twice: {labels}")
    for path, _ in inputs:
        if not path.exists():
            raise SystemExit(f"corpus not found: {path}")

    from llmops_dagster.config import Settings, apply_offline_env_defaults

    apply_offline_env_defaults()  # before transformers reads HF_HUB_OFFLINE
    from transformers import AutoTokenizer

    from llmops_dagster.embed.model import canonical_model_id
    from llmops_dagster.text.chunking import chunk_document

    model = Settings().models.embedding_model
    tokenizer = AutoTokenizer.from_pretrained(model)
    libraries, count = make_candidates(tokenizer, args.chunk_size, args.overlap)
    configs: dict[str, dict[str, Any]] = {}
    for (corpus, group), label in zip(inputs, labels, strict=True):
        docs = load_corpus(corpus, args.limit, group)
        if not docs:
            raise SystemExit(f"corpus {corpus}: no documents with text")
        fmt = "md" if group > 1 or corpus.is_dir() else "txt"
        candidates = dict(libraries)
        candidates[PROJECT_CHUNKER] = lambda text, fmt=fmt: [
            chunk.text
            for chunk in chunk_document(
                "bench",
                text,
                tokenizer=tokenizer,
                chunk_size=args.chunk_size,
                overlap=args.overlap,
                fmt=fmt,
            )
        ]

        doc_tokens = [count(doc) for doc in docs]
        print(
            f"corpus={corpus} docs={len(docs)} group={group} "
            f"tokens/doc mean={statistics.fmean(doc_tokens):.0f} max={max(doc_tokens)} "
            f"chunk_size={args.chunk_size} overlap={args.overlap}"
        )
        rows = [measure(name, fn, docs, count, args.chunk_size) for name, fn in candidates.items()]
        header = f"{'chunker':38} {'docs/s':>8} {'chunks':>7} {'max_tok':>7} {'over':>5} "
        header += f"{'sent_end':>8} {'fill':>6}"
        print(header)
        for row in rows:
            print(
                f"{row['chunker']:38} {row['docs_per_s']:>8} {row['chunks']:>7} "
                f"{row['max_tokens']:>7} {row['over_limit']:>5} {row['sentence_end_frac']:>8} "
                f"{row['fill_non_last']:>6}"
            )
        configs[label] = {
            # relative to the checkout: a results file names no machine path
            "corpus": os.path.relpath(corpus.resolve(), ROOT),
            "docs": len(docs),
            "mean_doc_tokens": round(statistics.fmean(doc_tokens), 1),
            "chunk_size": args.chunk_size,
            "overlap": args.overlap,
            "results": rows,
        }
    data = {
        # The model's id, not its folder: a path names this machine's install.
        "tokenizer": canonical_model_id(model),
        "project_chunker": PROJECT_CHUNKER,
        "reference_chunker": REFERENCE_CHUNKER,
        "configs": configs,
    }
    headline = {label: headline_of(config["results"]) for label, config in configs.items()}
    write_results(args.out, data, headline, root=ROOT)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
