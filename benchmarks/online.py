"""Online benchmark: judging production answers, the answer cache on a replay, the rollout split.

Stack (all real, throw-away): the sample corpus indexed by the real assets under a fresh alias on
``ELASTICSEARCH_URL`` (unset: the local node of ``llmops-dagster services up``), an MLflow SQLite
store in a temp folder, two registered bundles (the packaged SmolLM2 with ``--max-new-tokens``
as champion, the extractive answerer), and the service ``llmops-dagster serve`` builds
(``build_service``) behind the FastAPI app, called in-process over HTTP (``TestClient``).

1. Cache replay: ``--distinct`` golden questions, each asked ``--repeats`` times in a seeded
   shuffled order by callers of one audience, with the answer cache on. ``cache_hit_rate`` =
   hits ÷ answers (the ideal is (repeats − 1) ÷ repeats); latency p50 of hits vs misses
   (server-side total, ms) and their ratio.
2. Judging: the answers the replay logged, sampled as ``serving_judgments`` samples a day
   (default ``per_version``), scored with citation validity and — with ``--judge local`` — the
   local judge's answer relevancy and faithfulness (the project's constrained-JSON judge over
   the same SmolLM2). ``judged_per_minute`` = judged answers ÷ judging minutes;
   ``share_judged`` = judged ÷ answered that day at the default sampling.
3. Rollout split: ``--callers`` callers (their own API keys), each asking ``--rounds`` times,
   with ``LLMOPS_SERVING_ROLLOUT=split`` at ``--share`` and the extractive bundle (k=3) as
   challenger. ``observed_share`` = callers answered by the challenger ÷ callers (target: within
   ±5 points of the share), ``sticky`` = callers who always got the same bundle ÷ callers
   (target 100 %).

Writes ``benchmarks/results/online.json`` through ``results_file.write_results`` (refused on a
dirty checkout; ``--out`` elsewhere for a trial) and prints a table. About 10 minutes on 2 cores
with the defaults; ``--judge none`` skips the judge (the slow part).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmops_dagster.config import PROJECT_ROOT, Settings, apply_offline_env_defaults

apply_offline_env_defaults()

from results_file import write_results
from rich.console import Console
from rich.table import Table

from llmops_dagster.stats import percentile

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "online.json"
TARGETS = {"share_tolerance": 0.05, "sticky": 1.0}
console = Console()


def golden_questions(limit: int) -> list[str]:
    from llmops_dagster.qa import load_qa_jsonl

    items = load_qa_jsonl(PROJECT_ROOT / "data" / "golden" / "qa.jsonl")
    return [item.question for item in items if not item.groups][:limit]


def _client(settings: Settings, key_file: Path) -> tuple[Any, Any]:
    from fastapi.testclient import TestClient

    from llmops_dagster.serving.app import create_app
    from llmops_dagster.serving.auth import KeyStore
    from llmops_dagster.serving.wiring import build_service

    service = build_service(settings)
    return TestClient(create_app(service, KeyStore(key_file))), service


def _ask(http: Any, key: str, question: str) -> dict[str, Any]:
    response = http.post(
        "/v1/answer", json={"question": question}, headers={"Authorization": f"Bearer {key}"}
    )
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text}")
    return response.json()


def cache_replay(
    settings: Settings, key_file: Path, key: str, questions: list[str], repeats: int, seed: int
) -> tuple[dict[str, Any], Any]:
    asked = [q for q in questions for _ in range(repeats)]
    random.Random(seed).shuffle(asked)
    http, service = _client(
        settings.override(serving={"answer_cache_entries": 4 * len(questions)}), key_file
    )
    hits: list[float] = []
    misses: list[float] = []
    with http:
        for n, question in enumerate(asked, 1):
            body = _ask(http, key, question)
            (hits if body["cached"] else misses).append(float(body["timings_ms"]["total"]))
            if n % 10 == 0:
                console.log(f"replay {n}/{len(asked)}: {len(hits)} hits")
        service.tracer.flush()
    service.close()
    hit_p50, miss_p50 = percentile(hits, 50), percentile(misses, 50)
    return {
        "answers": len(asked),
        "distinct_questions": len(questions),
        "repeats": repeats,
        "hits": len(hits),
        "cache_hit_rate": round(len(hits) / len(asked), 4),
        "ideal_hit_rate": round((repeats - 1) / repeats, 4),
        "hit_p50_ms": round(hit_p50, 3),
        "miss_p50_ms": round(miss_p50, 3),
        "hit_over_miss_p50": round(hit_p50 / miss_p50, 5) if miss_p50 else None,
    }, service.store


def judging(settings: Settings, store: Any, judge_kind: str, per_version: int) -> dict[str, Any]:
    from llmops_dagster.evaluate.judge import build_judge
    from llmops_dagster.evaluate.online import judge_answers, sample_day
    from llmops_dagster.models.spec import JudgeSpec
    from llmops_dagster.resources import build_resources

    rows = store.answers_since(None)
    day = max(str(r["created_at"])[:10] for r in rows)
    sample = sample_day(rows, day, per_version=per_version)
    resources = build_resources(settings, with_dlt=False)
    models = resources["models"]
    spec = JudgeSpec(kind=judge_kind)  # type: ignore[arg-type]
    local = models.for_evaluation().generator() if judge_kind == "local" else None
    judge = build_judge(spec, generator=local)
    # The chunks' texts as the asset reads them: the warehouse holds the indexed chunks.
    from llmops_dagster.chunks.chunk_table import CHUNKS_TABLE
    from llmops_dagster.warehouse import connect_warehouse

    with connect_warehouse(url=None, duckdb_path=settings.duckdb_path, read_only=True) as con:
        texts = {
            str(c): str(t) for c, t in con.fetchall(f"SELECT chunk_id, text FROM {CHUNKS_TABLE}")
        }
    answers = [a.with_context(texts) for a in sample.chosen]
    started = time.perf_counter()
    judgments, _ = judge_answers(answers, judge=judge)
    minutes = (time.perf_counter() - started) / 60
    return {
        "judge": judge_kind,
        "per_version": per_version,
        "answered": sample.answered,
        "judged": len(answers),
        "share_judged": round(sample.share_judged, 4),
        "scores": len(judgments),
        "judging_minutes": round(minutes, 3),
        "judged_per_minute": round(len(answers) / minutes, 2) if minutes else None,
    }


def rollout(
    settings: Settings, key_file: Path, keys: dict[str, str], share: float, rounds: int
) -> dict[str, Any]:
    http, service = _client(
        settings.override(serving={"rollout": "split", "challenger_share": share}), key_file
    )
    seen: dict[str, set[str]] = {caller: set() for caller in keys}
    with http:
        for r in range(rounds):
            for caller, key in keys.items():
                seen[caller].add(_ask(http, key, "Where is Northwind Drones based?")["rollout"])
            console.log(f"rollout round {r + 1}/{rounds}")
    service.close()
    sticky = sum(len(arms) == 1 for arms in seen.values()) / len(seen)
    challenged = sum("challenger" in arms for arms in seen.values())
    observed = challenged / len(seen)
    return {
        "callers": len(seen),
        "requests": len(seen) * rounds,
        "configured_share": share,
        "observed_share": round(observed, 4),
        "share_error": round(abs(observed - share), 4),
        "sticky": round(sticky, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distinct", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--judge", choices=["none", "local"], default="local")
    parser.add_argument("--per-version", type=int, default=20)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--share", type=float, default=0.10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--no-write", action="store_true", help="print only (a trial on uncommitted code)"
    )
    args = parser.parse_args()

    from llmops_dagster.rag.bundle import (
        CHALLENGER,
        DEFAULT_BUNDLE_MODEL,
        register_bundle,
        set_bundle_alias,
    )
    from llmops_dagster.search.aliases import list_versions
    from llmops_dagster.search.client import make_client
    from llmops_dagster.serving.auth import add_key
    from llmops_dagster.serving.testbed import index_sample_corpus, register_test_bundles
    from llmops_dagster.tracking.mlflow_store import ensure_mlflow, mlflow_client
    from llmops_dagster.tracking.runs import open_run

    base = Settings()
    questions = golden_questions(args.distinct)
    with tempfile.TemporaryDirectory(prefix="online-bench-") as tmp_name:
        tmp = Path(tmp_name)
        alias = f"bench-online-{uuid.uuid4().hex[:8]}"
        settings = base.override(
            home=tmp / "home",
            elasticsearch={"url": base.es_url, "index_alias": alias},
            warehouse={"duckdb_path": tmp / "home" / "warehouse.duckdb"},
            mlflow={"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
            models={"cache_dir": base.models_cache_dir},
            serving={"bundle_poll_s": 3600.0, "rate_limit_per_minute": 1e6,
                     "rate_limit_burst": 100_000},
        )  # fmt: skip
        es = make_client(settings.cluster_spec())
        try:
            with console.status("indexing the sample corpus ..."):
                index_sample_corpus(settings, base.corpus.sample_data_dir)
            bundles = register_test_bundles(settings, llm_tokens=args.max_new_tokens, k=3)
            key_file = tmp / "api-keys.json"
            reader = add_key(key_file, "replay", [])[1]
            replay, store = cache_replay(
                settings, key_file, reader, questions, args.repeats, args.seed
            )
            judged = judging(settings, store, args.judge, args.per_version)
            # The rollout: extractive champion (k=3) and challenger (k=2), routing only.
            client = mlflow_client(settings.mlflow_uri)
            store_ = ensure_mlflow(settings.mlflow_uri, settings.mlflow.experiment)
            narrower = dataclasses.replace(bundles["extractive"].bundle, retrieval_k=2)
            with open_run(store_, run_name="rag_evaluation", tags={}, ui_url="http://x") as run:
                challenger = register_bundle(client, narrower, run=run)
            from llmops_dagster.serving.testbed import promote

            promote(client, bundles["extractive"], "online benchmark: extractive champion")
            set_bundle_alias(
                client,
                DEFAULT_BUNDLE_MODEL,
                challenger.version,
                CHALLENGER,
                evaluation_run_id=run.run_id,
                decision_summary="benchmark",
            )
            keys = {f"c{n:03d}": add_key(key_file, f"c{n:03d}", [])[1] for n in range(args.callers)}
            split = rollout(settings, key_file, keys, args.share, args.rounds)
        finally:
            for index in list_versions(es, alias):
                es.indices.delete(index=index, ignore_unavailable=True)

    result = {
        "cache": replay,
        "judging": judged,
        "rollout": split,
        "max_new_tokens": args.max_new_tokens,
        "targets": TARGETS,
        "met": {
            "rollout_share": split["share_error"] <= TARGETS["share_tolerance"],
            "rollout_sticky": split["sticky"] >= TARGETS["sticky"],
        },
    }
    headline = {
        "cache_hit_rate": replay["cache_hit_rate"],
        "hit_over_miss_p50": replay["hit_over_miss_p50"],
        "judged_per_minute": judged["judged_per_minute"],
        "share_judged": judged["share_judged"],
        "observed_share": split["observed_share"],
        "sticky": split["sticky"],
    }
    if not args.no_write:
        write_results(args.out, result, headline, root=PROJECT_ROOT)
    table = Table(title="online (benchmarks/online.py)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    hits = f"{replay['cache_hit_rate']} ({replay['hits']}/{replay['answers']})"
    table.add_row("cache hit rate (replay)", hits, f"ideal {replay['ideal_hit_rate']}")
    table.add_row("p50 hit / miss ms", f"{replay['hit_p50_ms']} / {replay['miss_p50_ms']}", "")
    table.add_row(
        f"judged per minute ({judged['judge']} judge)", str(judged["judged_per_minute"]), ""
    )
    table.add_row("share of the day judged", f"{judged['share_judged']} "
                  f"({judged['judged']}/{judged['answered']})", "")  # fmt: skip
    table.add_row("rollout observed share", f"{split['observed_share']} "
                  f"({split['callers']} callers)", f"{args.share} ± 0.05")  # fmt: skip
    table.add_row("rollout stickiness", str(split["sticky"]), "1.0")
    console.print(table)
    console.print("not written (--no-write)" if args.no_write else f"wrote {args.out}")


if __name__ == "__main__":
    main()
