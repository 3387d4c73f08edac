"""A golden set for a corpus the project has not seen: drafted → reviewed → evaluated, end to end.

Corpus: a SciFact subset (``../shared/bench/scifact``; BEIR test split): ``--docs`` abstracts,
half of them abstracts that real SciFact claims cite (a seeded sample), half other abstracts (a
seeded sample, the distractors), written as Markdown files (``# <title>`` + the abstract) for
the project's file source. Stack (all real, throw-away): a fresh ``LLMOPS_HOME`` in a temp
folder (DuckDB warehouse, MLflow on SQLite, datasets folder, an empty golden set), its own
Elasticsearch node on ``--es-port`` (the project's local-node helper; ``ELASTICSEARCH_URL`` set:
that cluster instead), the project's converted models.

Stages (each timed):

1. **ingest → index**: the ``ingest``, ``prepare`` and ``index`` asset groups through Dagster,
   as the demo materializes them.
2. **draft**: ``golden_candidates`` (``--max-items`` candidates, public audience; ``--drafter
   generator``: the configured generator writes the questions, checked, templates as fallback).
3. **review**: the real CLI — ``llmops-dagster golden list --json`` (a subprocess), then
   ``golden accept ID --reviewer …`` / ``golden reject ID --reviewer …`` per candidate (the click
   commands in-process with the same environment: a process start per candidate would cost
   minutes on 2 cores). A scripted rule stands in for the person (:func:`review_rule`):
   accept a candidate whose reference answer is a sentence of the SciFact abstract it cites
   (whitespace-normalised; the pipeline's cleaning or PII redaction may have changed it) and
   whose question is not the generic template stub ("What does <title> say about <words>?",
   which names the document and asks nothing specific); reject the rest.
4. **evaluate**: ``rag_evaluation`` (+ its checks and ``champion_model``) of the extractive
   bundle against the base model (no champion yet) on the accepted golden set: a real paired
   comparison (no judge). Fewer accepted items than ``min_cases`` (30) → ``allow_few_cases``,
   recorded on the decision.
5. **retrieval, drafted vs real**: the index's hybrid search (the default mode) for every
   accepted drafted question and for every SciFact claim whose relevant abstracts are all in the
   subset: hit@1/5/10 and MRR@10 of the relevant document (documents ranked by their best
   chunk) — whether drafted questions are easier than real ones.

About 10 minutes with the defaults on 2 busy cores, most of it the base model answering each
accepted question (measured with ``--max-items 64``: 23 of 64 accepted, 7.7 minutes — ingest →
index 1.9, evaluation 5.7).

Writes ``benchmarks/results/golden_bootstrap.json`` through ``results_file.write_results``
(refused on a dirty checkout; ``--no-write`` prints only) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmops_dagster.config import PROJECT_ROOT, Settings, apply_offline_env_defaults

apply_offline_env_defaults()

from results_file import write_results
from rich.console import Console
from rich.table import Table

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "golden_bootstrap.json"
SCIFACT = PROJECT_ROOT.parent / "shared" / "bench" / "scifact"
#: Where the abstracts go under the file source's root; a document's id is ``fs:<path>``.
SUBDIR = "scifact"
REVIEWER = "scripted-review"
#: The generic template of ``train/raft.draft_question``: the document's title and the
#: sentence's first content words, no specific thing asked.
STUB_QUESTION = re.compile(r"^What does .+ say about .+\?$", re.S)
RULE = (
    "accept iff the reference answer is a sentence of the cited SciFact abstract "
    "(whitespace-normalised) and the question is not the generic 'What does <title> say "
    "about <words>?' stub; reject the rest"
)
console = Console()


# --- pure parts (unit-tested: tests/unit/test_golden_bootstrap.py) ---------------------------
@dataclass(frozen=True)
class Abstract:
    doc_id: str  # SciFact's corpus id
    title: str
    text: str


@dataclass(frozen=True)
class Claim:
    claim_id: str
    text: str
    relevant: tuple[str, ...]  # SciFact corpus ids


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_claims(queries: Path, qrels: Path) -> list[Claim]:
    """SciFact's test claims with their relevant abstracts (qrels score > 0)."""
    relevant: dict[str, list[str]] = {}
    for line in qrels.read_text(encoding="utf-8").splitlines()[1:]:
        query_id, corpus_id, score = line.split("\t")
        if int(score) > 0:
            relevant.setdefault(query_id, []).append(corpus_id)
    return [
        Claim(str(q["_id"]), q["text"], tuple(relevant[str(q["_id"])]))
        for q in read_jsonl(queries)
        if str(q["_id"]) in relevant
    ]


def choose_subset(
    abstracts: Sequence[Abstract], claims: Sequence[Claim], n_docs: int, seed: int
) -> list[Abstract]:
    """``n_docs`` abstracts: half (rounded up) cited by claims, the rest not, each a seeded
    sample; in corpus order."""
    cited = {d for c in claims for d in c.relevant}
    rng = random.Random(seed)
    with_claims = [a for a in abstracts if a.doc_id in cited]
    others = [a for a in abstracts if a.doc_id not in cited]
    n_cited = min(len(with_claims), (n_docs + 1) // 2)
    chosen = {a.doc_id for a in rng.sample(with_claims, n_cited)}
    chosen |= {a.doc_id for a in rng.sample(others, min(len(others), n_docs - n_cited))}
    return [a for a in abstracts if a.doc_id in chosen]


def source_path(doc_id: str) -> str:
    """The file of an abstract under the file source's root."""
    return f"{SUBDIR}/{doc_id}.md"


def index_doc_id(doc_id: str) -> str:
    """The id the pipeline gives the abstract's document (``fs:`` + its relative path)."""
    return f"fs:{source_path(doc_id)}"


def source_file(abstract: Abstract) -> tuple[str, str]:
    """(relative path, Markdown) of one abstract: its title as the heading (the file source's
    title for ``.md``), the abstract as one paragraph."""
    title = " ".join(abstract.title.split()) or abstract.doc_id
    return source_path(abstract.doc_id), f"# {title}\n\n{' '.join(abstract.text.split())}\n"


def write_corpus(abstracts: Iterable[Abstract], root: Path) -> int:
    n = 0
    for abstract in abstracts:
        relative, text = source_file(abstract)
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text, encoding="utf-8")
        n += 1
    return n


def _squash(text: str) -> str:
    return " ".join(text.split())


def review_rule(candidate: Mapping[str, Any], abstracts: Mapping[str, str]) -> tuple[bool, str]:
    """The scripted reviewer (:data:`RULE`) on one ``golden list --json`` row; ``abstracts``:
    index doc id → the abstract's title + text. (accept?, reason)."""
    question = str(candidate.get("question") or "")
    answer = _squash(str(candidate.get("reference_answer") or ""))
    docs = candidate.get("relevant_doc_ids") or []
    source = abstracts.get(docs[0]) if docs else None
    if source is None:
        return False, "cites no SciFact abstract of the subset"
    if not answer or answer not in _squash(source):
        return False, "reference answer is not a sentence of the cited abstract"
    if STUB_QUESTION.match(question.strip()):
        return False, "question is the generic template stub"
    return True, "answer found in the cited abstract; specific question"


def rank_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> dict[str, Any]:
    """hit@1/5/10 and MRR@10 over queries: ``ranked[i]`` the documents found for query i (best
    first), ``relevant[i]`` its relevant ones (the first relevant one found counts)."""
    if len(ranked) != len(relevant):
        raise ValueError("one ranking per query")
    ranks = []
    for docs, wanted in zip(ranked, relevant, strict=True):
        ranks.append(next((n for n, d in enumerate(docs[:10], 1) if d in wanted), None))
    n = len(ranks)

    def share(value: float) -> float:
        return round(value / n, 4) if n else 0.0

    return {
        "queries": n,
        "hit_at_1": share(sum(r == 1 for r in ranks)),
        "hit_at_5": share(sum(r is not None and r <= 5 for r in ranks)),
        "hit_at_10": share(sum(r is not None for r in ranks)),
        "mrr_at_10": share(sum(1 / r for r in ranks if r is not None)),
    }


def doc_ranking(hits: Iterable[Any]) -> list[str]:
    """Documents in the order of their best chunk."""
    return list(dict.fromkeys(h.doc_id for h in hits))


# --- the run ---------------------------------------------------------------------------------
def _metadata(result: Any, asset: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def _env(settings: Settings) -> dict[str, str]:
    """The environment the CLI reads the same settings from."""
    from llmops_dagster.config.environment import child_env

    return child_env(**{
        "PYTHONPATH": str(PROJECT_ROOT),
        "LLMOPS_HOME": str(settings.home),
        "LLMOPS_GOLDEN": str(settings.corpus.golden_path),
        "LLMOPS_SOURCES_CONFIG": str(settings.corpus.sources_config),
        "LLMOPS_DUCKDB_PATH": str(settings.duckdb_path),
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "ELASTICSEARCH_URL": str(settings.elasticsearch.url),
        "LLMOPS_ES_INDEX_ALIAS": settings.elasticsearch.index_alias,
        "LLMOPS_MODELS_CACHE": str(settings.models_cache_dir),
    })  # fmt: skip


def review(settings: Settings, abstracts: Mapping[str, str]) -> dict[str, Any]:
    """``golden list --json`` in a subprocess, then accept / reject each by the rule."""
    from click.testing import CliRunner

    from llmops_dagster.cli import main as cli

    env = _env(settings)
    listed = subprocess.run(
        [sys.executable, "-m", "llmops_dagster.cli", "golden", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    pending = json.loads(listed.stdout)
    runner = CliRunner()
    decided: dict[str, list[dict[str, str]]] = {"accepted": [], "rejected": []}
    for candidate in pending:
        accept, reason = review_rule(candidate, abstracts)
        verb = "accept" if accept else "reject"
        out = runner.invoke(cli, ["golden", verb, candidate["id"], "--reviewer", REVIEWER], env=env)
        if out.exit_code != 0:
            raise RuntimeError(f"golden {verb} {candidate['id']}: {out.output}")
        decided["accepted" if accept else "rejected"].append(
            {"id": candidate["id"], "question": candidate["question"], "reason": reason}
        )
    return {"listed": len(pending), **decided}


def _start_es(base: Settings, port: int) -> tuple[str, Any]:
    from llmops_dagster.services.elasticsearch_local import fetch_distribution, start_node
    from llmops_dagster.services.local import local_node

    if base.uses_external_es:
        return str(base.elasticsearch.url), None
    fetch_distribution(base.es_dist_dir, base.local_node.version)
    node_dir = base.home / "elasticsearch" / f"golden-bootstrap-{port}"
    node = local_node(base, node_dir=node_dir, port=port)
    shutil.rmtree(node.node_dir / "data", ignore_errors=True)
    start_node(node)
    return node.url, node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="SciFact abstracts indexed")
    # 90: about a third pass the review rule on SciFact, so the evaluation gets ~30 cases.
    parser.add_argument("--max-items", type=int, default=90, help="golden candidates drafted")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--drafter", choices=["templates", "generator"], default="templates",
        help="golden_candidates' drafter (generator: the configured model writes the questions)",
    )  # fmt: skip
    parser.add_argument("--es-port", type=int, default=9343)
    parser.add_argument("--scifact", type=Path, default=SCIFACT)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--no-write", action="store_true", help="print only (a trial on uncommitted code)"
    )
    args = parser.parse_args()

    import dagster as dg

    from llmops_dagster.definitions import build_asset_checks, build_assets, build_resources
    from llmops_dagster.qa import load_qa_jsonl, qa_digest
    from llmops_dagster.resources import ModelsResource
    from llmops_dagster.search.aliases import list_versions
    from llmops_dagster.search.client import make_client
    from llmops_dagster.search.retriever import HybridRetriever
    from llmops_dagster.services.elasticsearch_local import stop_node
    from llmops_dagster.sources.source_config import load_sources_config

    corpus = [
        Abstract(str(d["_id"]), d.get("title", ""), d.get("text", ""))
        for d in read_jsonl(args.scifact / "corpus.jsonl")
    ]
    claims = read_claims(args.scifact / "queries.jsonl", args.scifact / "qrels.tsv")
    subset = choose_subset(corpus, claims, args.docs, args.seed)
    in_subset = {a.doc_id for a in subset}
    real = [c for c in claims if set(c.relevant) <= in_subset]
    by_index_id = {index_doc_id(a.doc_id): f"{a.title} {a.text}" for a in subset}

    base = Settings()
    minutes: dict[str, float] = {}
    es_url, node = _start_es(base, args.es_port)
    try:
        with tempfile.TemporaryDirectory(prefix="golden-bootstrap-") as tmp_name:
            tmp = Path(tmp_name)
            root = tmp / "corpus"
            write_corpus(subset, root)
            (tmp / "sources.yaml").write_text(
                f"filesystem:\n  root: {root}\n  globs: ['**/*.md']\n", encoding="utf-8"
            )
            golden_path = tmp / "golden.jsonl"
            golden_path.write_text("", encoding="utf-8")
            alias = f"golden-bootstrap-{uuid.uuid4().hex[:8]}"
            settings = base.override(
                home=tmp / "home",
                elasticsearch={"url": es_url, "index_alias": alias},
                warehouse={"duckdb_path": tmp / "home" / "warehouse.duckdb"},
                mlflow={"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
                models={"cache_dir": base.models_cache_dir},
                corpus={"sources_config": tmp / "sources.yaml", "golden_path": golden_path},
            )
            sources = load_sources_config(settings.corpus.sources_config)
            assets = [*build_assets(settings, sources), *build_asset_checks()]
            resources = build_resources(settings)
            es = make_client(settings.cluster_spec())
            try:
                with dg.DagsterInstance.ephemeral() as instance:

                    def materialize(selection: Any, run_config: dict | None = None) -> Any:
                        result = dg.materialize(
                            assets,
                            selection=selection,
                            resources=resources,
                            instance=instance,
                            run_config=run_config,
                        )
                        if not result.success:
                            raise RuntimeError(f"materializing {selection} failed")
                        return result

                    began = time.perf_counter()
                    with console.status(f"ingest → index of {len(subset)} abstracts ..."):
                        indexed = materialize(
                            dg.AssetSelection.groups("ingest", "prepare", "index")
                        )
                    minutes["ingest_to_index"] = (time.perf_counter() - began) / 60
                    index_meta = _metadata(indexed, "search_index")

                    digest_before = qa_digest(load_qa_jsonl(golden_path))
                    began = time.perf_counter()
                    draft_config = {
                        "max_items": args.max_items,
                        "seed": args.seed,
                        "drafter": args.drafter,
                    }
                    run_config = {"ops": {"golden_candidates": {"config": draft_config}}}
                    drafted = _metadata(
                        materialize(["golden_candidates"], run_config), "golden_candidates"
                    )
                    minutes["draft"] = (time.perf_counter() - began) / 60

                    began = time.perf_counter()
                    reviewed = review(settings, by_index_id)
                    minutes["review"] = (time.perf_counter() - began) / 60
                    accepted = load_qa_jsonl(golden_path)
                    digest_after = qa_digest(accepted)

                    began = time.perf_counter()
                    few = len(accepted) < 30
                    config = {"generator": "extractive", "judge": "none", "allow_few_cases": few}
                    with console.status(f"rag_evaluation on {len(accepted)} golden items ..."):
                        evaluated = materialize(
                            ["rag_evaluation", "champion_model"],
                            {"ops": {"rag_evaluation": {"config": config}}},
                        )
                    minutes["evaluate"] = (time.perf_counter() - began) / 60
                    evaluation = _metadata(evaluated, "rag_evaluation")

                began = time.perf_counter()
                retriever = HybridRetriever(
                    es, alias, ModelsResource.from_settings(settings).embedder()
                )

                def found(questions: list[str]) -> list[list[str]]:
                    hits = retriever.search_many(questions, k=30) if questions else []
                    return [doc_ranking(h) for h in hits]

                drafted_q = [item.question for item in accepted]
                drafted_rel = [set(item.relevant_doc_ids) for item in accepted]
                real_rel = [{index_doc_id(d) for d in c.relevant} for c in real]
                retrieval = {
                    "drafted_golden": rank_metrics(found(drafted_q), drafted_rel),
                    "scifact_claims": rank_metrics(found([c.text for c in real]), real_rel),
                    "mode": "hybrid_rrf",
                }
                minutes["retrieval"] = (time.perf_counter() - began) / 60
            finally:
                for index in list_versions(es, alias):
                    es.indices.delete(index=index, ignore_unavailable=True)
    finally:
        if node is not None:
            stop_node(node)

    metric_keys = sorted(k for k in evaluation if k.startswith(("metric/", "diff/", "ci_low/")))
    result = {
        "corpus": {
            "source": "BEIR SciFact test (../shared/bench/scifact)",
            "abstracts": len(subset),
            "abstracts_cited_by_claims": len(in_subset & {d for c in claims for d in c.relevant}),
            "claims_with_every_relevant_abstract_indexed": len(real),
            "chunks_indexed": index_meta.get("dagster/row_count"),
            "seed": args.seed,
        },
        "drafted": {
            "drafter": args.drafter,
            "generator_drafts": drafted.get("n_generator_drafts"),
            "template_fallbacks": drafted.get("n_template_fallbacks"),
            "candidates": drafted.get("n_candidates"),
            "chunks_seen": drafted.get("n_chunks_seen"),
            "documents": drafted.get("n_documents"),
            "dropped_golden_overlap": drafted.get("n_dropped_golden_overlap"),
            "dropped_duplicate": drafted.get("n_dropped_duplicate"),
            "chunks_dropped_audience": drafted.get("n_chunks_dropped_audience"),
        },
        "review": {
            "rule": RULE,
            "listed": reviewed["listed"],
            "accepted": len(reviewed["accepted"]),
            "rejected": len(reviewed["rejected"]),
            "rejected_by_reason": _count(r["reason"] for r in reviewed["rejected"]),
            "accepted_examples": [r["question"] for r in reviewed["accepted"][:3]],
        },
        "golden_digest": {"before": digest_before, "after": digest_after},
        "evaluation": {
            "candidate": "extractive bundle",
            "baseline": evaluation.get("baseline"),
            "cases": evaluation.get("cases"),
            "allow_few_cases": few,
            "decision": evaluation.get("decision"),
            "decision_summary": evaluation.get("decision_summary"),
            **{k: evaluation[k] for k in metric_keys},
        },
        "retrieval": retrieval,
        "minutes": {k: round(v, 2) for k, v in minutes.items()},
    }
    headline = {
        "accepted": len(reviewed["accepted"]),
        "drafted_mrr_at_10": retrieval["drafted_golden"]["mrr_at_10"],
        "claims_mrr_at_10": retrieval["scifact_claims"]["mrr_at_10"],
        "decision": evaluation.get("decision"),
    }
    if not args.no_write:
        write_results(args.out, result, headline, root=PROJECT_ROOT)
    _print(result)
    console.print("not written (--no-write)" if args.no_write else f"wrote {args.out}")


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


def _print(result: dict[str, Any]) -> None:
    table = Table(title="golden set bootstrap on SciFact (benchmarks/golden_bootstrap.py)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    drafted, reviewed = result["drafted"], result["review"]
    rows = [
        ("abstracts indexed (cited by claims)",
         f"{result['corpus']['abstracts']} ({result['corpus']['abstracts_cited_by_claims']})"),
        ("chunks indexed", str(result["corpus"]["chunks_indexed"])),
        ("candidates drafted", f"{drafted['candidates']} ({drafted['drafter']})"),
        ("dropped: golden overlap / duplicate",
         f"{drafted['dropped_golden_overlap']} / {drafted['dropped_duplicate']}"),
        ("chunks dropped: audience", str(drafted["chunks_dropped_audience"])),
        ("generator drafts / template fallbacks",
         "-" if drafted["generator_drafts"] is None
         else f"{drafted['generator_drafts']} / {drafted['template_fallbacks']}"),
        ("accepted / rejected", f"{reviewed['accepted']} / {reviewed['rejected']}"),
        ("golden digest before → after",
         f"{result['golden_digest']['before'][:12]} → {result['golden_digest']['after'][:12]}"),
        ("evaluation decision", str(result["evaluation"]["decision"])),
    ]  # fmt: skip
    for key, value in result["evaluation"].items():
        if key.startswith(("metric/", "diff/")):
            rows.append((key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    for name in ("drafted_golden", "scifact_claims"):
        r = result["retrieval"][name]
        rows.append((f"retrieval {name} (n={r['queries']}) hit@1 / hit@10 / MRR@10",
                     f"{r['hit_at_1']} / {r['hit_at_10']} / {r['mrr_at_10']}"))  # fmt: skip
    rows += [(f"minutes: {k}", f"{v:.2f}") for k, v in result["minutes"].items()]
    for figure, value in rows:
        table.add_row(figure, value)
    console.print(table)
    console.print(f"review rule: {reviewed['rule']}")
    console.print(f"rejected by reason: {reviewed['rejected_by_reason']}")
    console.print(f"decision: {result['evaluation']['decision_summary']}")


if __name__ == "__main__":
    main()
