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

    .venv/bin/python benchmarks/chunkers.py ../shared/bench/scifact/corpus.jsonl \
        [--limit 2000] [--group 1] [--chunk-size 200] [--overlap 32]

The corpus is a JSONL file (``text`` field, ``title`` optional) or a folder of ``.md``/``.txt``
files. ``--group N`` concatenates N records into one Markdown document with ``## title``
headings, to exercise long, structured inputs. Results go to ``benchmarks/results/chunkers.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


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


def make_candidates(tokenizer: Any, chunk_size: int, overlap: int) -> dict[str, Callable]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--group", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/chunkers.json")
    args = parser.parse_args()

    from llmops_dagster.config import Settings, apply_offline_env_defaults

    apply_offline_env_defaults()  # before transformers reads HF_HUB_OFFLINE
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Settings().models.embedding_model)
    docs = load_corpus(args.corpus, args.limit, args.group)
    candidates, count = make_candidates(tokenizer, args.chunk_size, args.overlap)

    from llmops_dagster.text.chunking import chunk_document

    fmt = "md" if args.group > 1 or args.corpus.is_dir() else "txt"
    candidates["llmops_dagster chunk_document"] = lambda text: [
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
        f"corpus={args.corpus} docs={len(docs)} group={args.group} "
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing: dict[str, Any] = {}
    if args.out.is_file():
        existing = json.loads(args.out.read_text())
    key = f"{args.corpus.name}:limit={args.limit}:group={args.group}"
    existing[key] = {
        "corpus": str(args.corpus),
        "docs": len(docs),
        "mean_doc_tokens": round(statistics.fmean(doc_tokens), 1),
        "chunk_size": args.chunk_size,
        "overlap": args.overlap,
        "results": rows,
    }
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
