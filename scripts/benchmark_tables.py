"""Print the figure tables of docs/benchmarks.md, generated from benchmarks/results/*.json.

One block per results file, between ``<!-- results:<file>:begin -->`` and ``... :end -->``:
the run (git revision, when it finished, the machine's load where the file records it) and
its headline figures, with targets and verdicts exactly as the file records them. Values are
printed as the JSON holds them (no rounding), so every figure on the page can be found in a
results file.

`--write` replaces every block, and a unit test checks that the page equals this output and
that each results file has its block, so the page cannot drift from the measurements.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"


def fmt(value: Any) -> str:
    """A value as the results file holds it (numbers unrounded, booleans as JSON)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value.replace("|", "\\|")
    return json.dumps(value, ensure_ascii=False).replace("|", "\\|")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return lines


def run_line(data: dict[str, Any], load: str | None = None) -> str:
    """Which run the figures come from: its git revision, when it finished, the load."""
    sha = data.get("git_sha", "not recorded")
    finished = next(
        (
            e.get("finished_at")
            for e in reversed(data.get("history", []))
            if e.get("git_sha") == sha
        ),
        None,
    )
    parts = [f"git `{sha}`", f"finished {finished or 'not recorded'}"]
    if load:
        parts.append(load)
    return "Run: " + ", ".join(parts) + "."


def _throughput(d: dict[str, Any]) -> list[str]:
    what = {
        "p2_ratio": "end-to-end indexing ÷ embedding-only ceiling (texts/s)",
        "p3_ratio": "onnx-int8 ÷ fp32 embedding throughput",
        "p3_ndcg_delta": "hybrid nDCG@10 change with onnx-int8 (all of SciFact)",
        "p4_ratio": "incremental run after 1 % changed ÷ full run",
        "p5_ratio": "hybrid_rrf p95 ÷ kNN p95, query embedding included",
        "p8_ratio": "`import llmops_dagster.definitions` ÷ `import dagster`",
    }
    rows = [
        [f"`{key}`", text, d[key], d["targets"].get(key), d["verdict"].get(key)]
        for key, text in what.items()
    ]
    p2, p3, p5, cos = d["p2"], d["p3"], d["p5"], d["p3_cosine"]
    details = [
        ["documents / chunk texts indexed", f"{d['docs']} / {d['chunk_texts']}"],
        ["p2: pipeline / ceiling texts/s", f"{p2['pipeline_texts_per_s']} / {p2['ceiling_texts_per_s']}"],  # noqa: E501
        ["p3: fp32 / onnx-int8 seconds for the same texts", f"{p3['fp32_s']} / {p3['onnx_int8_s']} ({p3['texts']} texts)"],  # noqa: E501
        ["p3: share of int8 time in the forward pass", p3["where_the_time_goes"]["onnx_int8"]["forward_share"]],  # noqa: E501
        ["p3: cosine int8 vs fp32, min / p1 / mean", f"{cos['min']} / {cos['p1']} / {cos['mean']} ({cos['vectors']} vectors)"],  # noqa: E501
        ["p5: Elasticsearch-only hybrid ÷ kNN p95", p5["es_only_ratio"]],
        ["p8: import seconds, dagster / definitions", f"{d['import_dagster_s']} / {d['import_definitions_s']}"],  # noqa: E501
    ]  # fmt: skip
    return [
        run_line(d),
        "",
        *table(["figure", "what", "measured", "target", "verdict"], rows),
        "",
        *table(["detail", "measured"], details),
    ]


def _retrieval_scifact(d: dict[str, Any]) -> list[str]:
    load = d["setup"].get("load_average_1m")
    modes = [
        [f"`{mode}`", m["ndcg@10"], m["recall@100"], m["mrr@10"], m["p95_ms"], m["es_p95_ms"]]
        for mode, m in d["modes"].items()
    ]
    stemming = [
        [route, s["analyzer"], s["ndcg@10"], s["recall@100"]]
        for route, s in d["bm25_stemming"].items()
    ]
    ratios = [[f"`{key}`", value] for key, value in d["ratios"].items()]
    ratios += [[f"`{key}`", value] for key, value in d["hybrid_vs_best_single"].items()]
    return [
        run_line(d, f"load average (1 min) at start / end {fmt(load)}" if load else None),
        f"{d['setup']['dataset']}, {d['setup']['documents']} documents.",
        "",
        *table(["mode", "nDCG@10", "R@100", "MRR@10", "p95 ms", "p95 ms (ES only)"], modes),
        "",
        *table(["BM25 stemming route", "analyzer", "nDCG@10", "R@100"], stemming),
        "",
        *table(["ratio / difference", "measured"], ratios),
    ]


def _fusion_dev(d: dict[str, Any]) -> list[str]:
    best = [
        [f"`{mode}`", m["ndcg@10"], m["recall@100"], m["mrr@10"]]
        for mode, m in d["best"].items()
        if isinstance(m, dict)
    ]
    rrf = [row["ndcg@10"] for row in d["rrf_sweep"]]
    linear = [row["ndcg@10"] for row in d["linear_sweep"]]
    chosen = d["chosen"]
    return [
        run_line(d),
        f"{d['setup']['dataset']}.",
        "",
        *table(["mode (best setting)", "nDCG@10", "R@100", "MRR@10"], best),
        "",
        *table(
            ["sweep", "settings", "nDCG@10 min", "nDCG@10 max"],
            [
                ["RRF (window × rank constant)", len(rrf), min(rrf), max(rrf)],
                [
                    "linear (window × weights × normalisation)",
                    len(linear),
                    min(linear),
                    max(linear),
                ],
            ],
        ),
        "",
        "Chosen by the script: window "
        f"{fmt(chosen['window'])}, rank constant {fmt(chosen['rank_constant'])}, linear weights "
        f"{fmt(chosen['linear_weights'])}, normalisation {fmt(chosen['normalization'])}.",
    ]


def _vector_options(d: dict[str, Any]) -> list[str]:
    load = d["setup"].get("load_average_1m_end")
    rows = [
        [
            f"`{name}`",
            o["bits_per_dimension_searched"],
            o["knn_ndcg@10"],
            o["knn_recall@100"],
            o["hybrid_rrf_ndcg@10"],
            o["embedding_knn_vectors_bytes"],
            o["knn_es_p95_ms"],
        ]
        for name, o in d["options"].items()
    ]
    headers = ["index_options", "bits/dim searched", "kNN nDCG@10", "kNN R@100",
               "hybrid nDCG@10", "vector bytes", "kNN p95 ms (ES)"]  # fmt: skip
    return [
        run_line(d, f"load average (1 min) at the end {fmt(load)}" if load is not None else None),
        "",
        *table(headers, rows),
        "",
        f"Recommended: `{d['recommended']}` ({d['rule']}).",
    ]


def _chunkers(d: dict[str, Any]) -> list[str]:
    lines = [run_line(d), ""]
    headers = ["chunker", "docs/s", "chunks", "max tokens", "over limit", "sentence end",
               "fill (non-last)", "mean tokens"]  # fmt: skip
    for name, config in d["configs"].items():
        lines += [
            f"`{name}`: {config['docs']} documents of {config['mean_doc_tokens']} tokens on "
            f"average, chunk size {config['chunk_size']}, overlap {config['overlap']}.",
            "",
        ]
        rows = [
            [r["chunker"], r["docs_per_s"], r["chunks"], r["max_tokens"], r["over_limit"],
             r["sentence_end_frac"], r["fill_non_last"], r["mean_tokens"]]
            for r in config["results"]
        ]  # fmt: skip
        lines += [*table(headers, rows), ""]
    return lines[:-1]


def _eval_throughput(d: dict[str, Any]) -> list[str]:
    det, agreement = d["details"], d["agreement"]
    rows = [
        ["`batched_vs_serial` (cases/min batched ÷ one by one)", d["batched_vs_serial"]],
        ["`cases_per_min` batched / one by one", f"{d['cases_per_min']} / {det['serial_cases_per_min']}"],  # noqa: E501
        ["identical answers", agreement["identical_answers"]],
        ["largest aggregate difference (tolerance)", f"{fmt(agreement['max_aggregate_abs_diff'])} ({fmt(agreement['tolerance'])})"],  # noqa: E501
        ["agrees", agreement["agrees"]],
        ["cases, k, max new tokens, batch size", f"{det['cases']}, {det['k']}, {det['max_new_tokens']}, {det['batch_size']}"],  # noqa: E501
    ]  # fmt: skip
    return [run_line(d), "", *table(["figure", "measured"], rows)]


def _serve(d: dict[str, Any]) -> list[str]:
    load, over, targets, met = d["load"], d["overhead"], d["targets"], d["met"]
    versions = ", ".join(f"v{k}: {v}" for k, v in load["responses_per_bundle_version"].items())
    rows = [
        ["requests (clients)", f"{load['requests']} ({load['clients']})", "—", "—"],
        ["errors", load["errors"], targets["errors"], met["errors"]],
        ["`overhead_ratio`: server p50 ÷ direct pipeline p50", f"{d['overhead_ratio']} ({over['server_p50_ms']} / {over['direct_p50_ms']} ms)", f"≤ {fmt(targets['overhead_ratio_max'])}", met["overhead_ratio"]],  # noqa: E501
        ["traces recorded / answers served", f"{d['traces_recorded']} / {d['answers_served']}", "—", met["every_request_traced"]],  # noqa: E501
        ["responses per bundle version (champion swapped)", f"{versions} (swapped: {fmt(load['swapped'])})", "—", "—"],  # noqa: E501
        ["responses mixing bundles", load["responses_mixing_bundles"], "—", "—"],
        ["concurrent p50 / p95 ms", f"{d['p50_ms']} / {d['p95_ms']}", "—", "—"],
    ]  # fmt: skip
    samples = sorted(set(load.get("error_samples", [])))
    lines = [run_line(d), "", *table(["figure", "measured", "target", "met"], rows)]
    if samples:
        lines += ["", "Errors recorded: " + "; ".join(f"`{s}`" for s in samples) + "."]
    return lines


def mix_rows(mix: dict[str, Any] | None) -> list[list[Any]]:
    """The sample run's training mix (runs before it was recorded have none)."""
    if not mix:
        return []
    made = (
        f"{mix['n_handwritten']} hand-written + {mix['n_drafted']} RAFT drafts "
        f"({mix['n_dropped_golden_overlap']} drafts dropped as golden restatements)"
    )
    return [["training mix (sample run)", made]]


def _finetune(d: dict[str, Any]) -> list[str]:
    rows = []
    for part in ("heldout", "sample"):
        for metric, m in d[part]["metrics"].items():
            rows.append(
                [
                    part,
                    metric,
                    m["n"],
                    m["base"],
                    m["adapter"],
                    m["diff"],
                    m["ci95"],
                    m["beats_base"],
                ]
            )
    heldout = d["heldout"]
    decisions = heldout["decisions"]
    gap = d["sample"].get("vs_extractive")
    if gap is not None:  # the adapter against the extractive answerer on the same passages
        verdict = f"beats extractive: {fmt(gap['beats_extractive'])}"
        rows.append(["sample", "token_f1 vs extractive", gap["n"], gap["extractive"],
                     gap["adapter"], gap["diff"], gap["ci95"], verdict])  # fmt: skip
    trained = []
    for part, t in (("held-out run", heldout["training"]), ("sample run", d["sample"]["training"])):
        seen, epochs, minutes = (t.get(k, "—") for k in ("examples_seen", "epochs", "minutes"))
        got = f"{t['steps']} steps, {seen} examples seen, {epochs} epochs, {minutes} min"
        trained.append([f"training ({part})", got])
    return [
        run_line(d),
        f"heldout: {heldout['dataset']}; sample: {d['sample']['dataset']}.",
        "",
        *table(["set", "metric", "n", "base", "adapter", "diff", "95 % CI", "beats base"], rows),
        "",
        *table(
            ["detail", "measured"],
            [
                ["held-out labels", heldout["heldout_labels"]],
                ["held-out majority baseline", heldout["majority_baseline"]],
                ["decisions of the base", decisions["base"]],
                ["decisions of the adapter", decisions["adapter"]],
                ["training steps (held-out run) / items", f"{heldout['training']['steps']} / {heldout['split']['train_items']}"],  # noqa: E501
                *trained,
                *mix_rows(d["sample"].get("mix")),
                ["`tokens_per_s_ratio` (project ÷ plain training loop)", d["tokens_per_s_ratio"]],
            ],
        ),
    ]  # fmt: skip


def _load_search(d: dict[str, Any]) -> list[str]:
    rows = [
        [f"`{mode}`", m["clients"], m["requests"], m["errors"], m["qps"], m["p50_ms"],
         m["p95_ms"], m["p99_ms"]]
        for mode, m in d["modes"].items()
    ]  # fmt: skip
    headers = ["mode", "clients", "requests", "errors", "qps", "p50 ms", "p95 ms", "p99 ms"]
    return [run_line(d), "", *table(headers, rows)]


def _cluster(d: dict[str, Any]) -> list[str]:
    stop = d["drills"]["stop"]
    rows = [
        ["nodes / shards / replicas", f"{d['nodes']} / {d['shards']} / {d['replicas']}"],
        ["searches / failed", f"{stop['searches']} / {stop['failed']}"],
        ["searches / failed while the master stopped", f"{stop['searches_during']} / {stop['failed_during']}"],  # noqa: E501
        ["failover window s", stop["failover_window_s"]],
        ["health with the node down", stop["health_with_node_down"]],
        ["unassigned shards with the node down", stop["unassigned_shards_with_node_down"]],
        ["documents with the node down / expected", f"{stop['docs_with_node_down']} / {stop['docs_expected']}"],  # noqa: E501
        ["green again after the node rejoined, s", stop["rejoin_green_s"]],
    ]  # fmt: skip
    return [run_line(d), "", *table(["figure (stop the elected master)", "measured"], rows)]


def _warehouse(d: dict[str, Any]) -> list[str]:
    stages = d["stages"]
    keys = ["documents_s", "chunks_s", "embedding_lookup_s", "index_s", "total_s"]
    rows = [[key, stages["duckdb"][key], stages["postgres"][key]] for key in keys]
    return [
        run_line(d),
        f"{d['docs']} documents, {d['active_chunks']} chunks; PostgreSQL ÷ DuckDB "
        f"`ratio` {fmt(d['ratio'])}; identical outputs: {fmt(d['identical'])}.",
        "",
        *table(["stage", "DuckDB", "PostgreSQL"], rows),
    ]


#: Results file → its tables. A results file without an entry here fails the unit test.
def _generation(d: dict[str, Any]) -> list[str]:
    shares, det, agreement = d["share_of_saving"], d["details"], d["agreement"]
    rows = [
        [v["variant"], v["threads"], v["max_new_tokens"], v["batch_size"],
         "yes" if v["prefix_cache"] else "no",
         "length" if v.get("order_by_length") else "given",
         "yes" if v.get("gqa_attention") else "no",
         "yes" if v.get("parallel_batches") else "no",
         v["sides_generated"], v["seconds_per_case"],
         shares.get(v["variant"], "—"), v["identical_to_today"], v["prefix_of_today"]]
        for v in d["variants"]
    ]  # fmt: skip
    # Runs before the length order, in-place attention and parallel batches existed lack their
    # agreement rows.
    batched = [
        [f"{name.replace('_', ' ')} answers identical to the same budget without it",
         agreement[f"{name}_identical_to_length"]]
        for name in ("batching", "length_order", "attention", "parallel_batches")
        if f"{name}_identical_to_length" in agreement
    ]  # fmt: skip
    return [
        run_line(d),
        "",
        *table(["variant", "threads", "max new tokens", "batch", "prefix cache", "batch order",
                "GQA in place", "batches side by side", "sides generated", "s per golden case",
                "share of the saving", "= today", "prefix of today"], rows),
        "",
        *table(
            ["figure", "measured"],
            [
                ["`today_vs_new` (s per case today ÷ new; target ≥ 3)", d["today_vs_new"]],
                ["batching kept (measured faster than without)", d["batching_kept"]],
                ["prefix cache answers identical to the same budget without it", agreement["prefix_cache_identical_to_length"]],  # noqa: E501
                *batched,
                ["cases, k, budget today / sized to the task", f"{det['cases']}, {det['k']}, {det['old_max_new_tokens']} / {det['task_max_new_tokens']} ({det['task_budget_rule']})"],  # noqa: E501
                ["evaluation's max new tokens now", det["evaluation_max_new_tokens_now"]],
                ["cores", det["cores"]],
            ],
        ),
    ]  # fmt: skip


def _online(d: dict[str, Any]) -> list[str]:
    cache, judged, split, met = d["cache"], d["judging"], d["rollout"], d["met"]
    rows = [
        ["cache hit rate on the replay (ideal)", f"{cache['cache_hit_rate']} ({cache['ideal_hit_rate']})", "—", "—"],  # noqa: E501
        ["answers (distinct questions × repeats)", f"{cache['answers']} ({cache['distinct_questions']} × {cache['repeats']})", "—", "—"],  # noqa: E501
        ["p50 ms hit / miss", f"{cache['hit_p50_ms']} / {cache['miss_p50_ms']}", "—", "—"],
        [f"judged answers per minute ({judged['judge']} judge)", judged["judged_per_minute"], "—", "—"],  # noqa: E501
        ["share of the day's answers judged at per_version " + str(judged["per_version"]), f"{judged['share_judged']} ({judged['judged']}/{judged['answered']})", "—", "—"],  # noqa: E501
        ["rollout: observed share of callers on the challenger", f"{split['observed_share']} of {split['callers']} ({split['requests']} requests)", f"{split['configured_share']} ± {fmt(d['targets']['share_tolerance'])}", met["rollout_share"]],  # noqa: E501
        ["rollout: callers who always got the same bundle", split["sticky"], d["targets"]["sticky"], met["rollout_sticky"]],  # noqa: E501
    ]  # fmt: skip
    return [run_line(d), "", *table(["figure", "measured", "target", "met"], rows)]


def _embed_finetune(d: dict[str, Any]) -> list[str]:
    modes, tr, setup = d["modes"], d["training"], d["setup"]

    def ci(x: dict[str, Any] | None) -> str:
        return "—" if x is None else f"{fmt(x['diff'])} [{fmt(x['ci_low'])}, {fmt(x['ci_high'])}]"

    rows = []
    for mode, row in modes.items():
        tuned = row.get("finetuned")
        rows.append([
            mode, row["base"]["ndcg@10"], tuned["ndcg@10"] if tuned else "=",
            ci(row.get("ndcg@10_diff")), row["base"]["recall@100"],
            tuned["recall@100"] if tuned else "=", ci(row.get("recall@100_diff")),
            row.get("goal_ndcg@10", "—"), row.get("goal_met", "—"),
        ])  # fmt: skip
    recipe = tr["recipe"]
    return [
        run_line(d, f"load average (1 min) at start / end {fmt(setup['load_average_1m'])}"),
        "",
        *table(["mode", "nDCG@10 base", "nDCG@10 fine-tuned", "Δ nDCG@10 [95% CI]", "R@100 base",
                "R@100 fine-tuned", "Δ R@100 [95% CI]", "goal nDCG@10", "met"], rows),
        "",
        *table(
            ["training", "value"],
            [
                ["data", setup["training_data"]],
                ["indexed as", setup.get("chunking", "one chunk per abstract")],
                ["chunks (abstracts)", f"{setup.get('chunks', setup['documents'])} ({setup['documents']})"],  # noqa: E501
                ["pairs", tr["examples"]],
                ["negatives", "BM25 hard negative + in-batch" if recipe.get("hard_negative", True) else "in-batch only"],  # noqa: E501
                ["steps × batch = examples seen", f"{tr['steps']} × {recipe['batch_size']} = {tr['examples_seen']}"],  # noqa: E501
                ["learning rate", recipe["learning_rate"]],
                ["training minutes", tr["train_minutes"]],
                ["final loss", tr["final_loss"]],
                ["model id", tr["model_id"]],
            ],
        ),
    ]  # fmt: skip


def _query_drafts(d: dict[str, Any]) -> list[str]:
    drafted, setup = d["drafted"], d["setup"]
    rows = [
        ["generator", setup["generator"]],
        ["sample", setup["sample"]],
        ["drafts accepted (share)", f"{drafted['accepted']} of {drafted['requests']} "
         f"({fmt(drafted['accepted_share'])})"],
        *[[f"refused: {why}", n] for why, n in drafted["refusal_reasons"].items()],
        ["seconds per draft", drafted["seconds_per_draft"]],
        [f"hours to draft every chunk ({drafted['corpus_chunks']}) at this rate",
         drafted["corpus_hours_at_this_rate"]],
    ]  # fmt: skip
    # A reply may run over lines; a table cell may not.
    samples = [
        [s["sentence"], " ↵ ".join(s["reply"].splitlines()), s["accepted"]] for s in d["samples"]
    ]
    return [
        run_line(d, f"load average (1 min) at start / end {fmt(setup['load_average_1m'])}"),
        "",
        *table(["figure", "measured"], rows),
        "",
        *table(["held-out sentence", "generator's reply", "accepted"], samples),
    ]


def _golden_bootstrap(d: dict[str, Any]) -> list[str]:
    corpus, drafted, review, ev, ret = (
        d["corpus"], d["drafted"], d["review"], d["evaluation"], d["retrieval"]
    )  # fmt: skip
    rows = [
        [
            "abstracts indexed (cited by claims)",
            f"{corpus['abstracts']} ({corpus['abstracts_cited_by_claims']})",
        ],
        ["candidates drafted (drafter)", f"{drafted['candidates']} ({drafted['drafter']})"],
        [
            "dropped: restating golden / duplicate / audience",
            f"{drafted['dropped_golden_overlap']} / {drafted['dropped_duplicate']} / "
            f"{drafted['chunks_dropped_audience']}",
        ],
        ["reviewed: accepted / rejected", f"{review['accepted']} / {review['rejected']}"],
        ["review rule", review["rule"]],
        [
            "golden digest before → after",
            f"{d['golden_digest']['before']} → {d['golden_digest']['after']}",
        ],
        ["evaluation (cases)", f"{ev['candidate']} vs {ev['baseline']} ({ev['cases']})"],
        ["decision", ev["decision_summary"]],
    ]
    rows += [[k, v] for k, v in ev.items() if k.startswith(("metric/", "diff/", "ci_low/"))]
    retrieval = [
        [name, r.get("queries", r.get("n", "—")), r.get("hit_at_1", "—"), r.get("mrr_at_10", "—")]
        for name, r in ret.items()
        if isinstance(r, dict)
    ]
    return [
        run_line(d),
        "",
        *table(["figure", "measured"], rows),
        "",
        *table(["queries (hybrid_rrf)", "n", "hit@1", "MRR@10"], retrieval),
        "",
        *table(["stage", "minutes"], list(d["minutes"].items())),
    ]


TABLES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "retrieval_scifact.json": _retrieval_scifact,
    "fusion_dev.json": _fusion_dev,
    "vector_options.json": _vector_options,
    "throughput.json": _throughput,
    "chunkers.json": _chunkers,
    "eval_throughput.json": _eval_throughput,
    "generation.json": _generation,
    "online.json": _online,
    "embed_finetune.json": _embed_finetune,
    "query_drafts.json": _query_drafts,
    "golden_bootstrap.json": _golden_bootstrap,
    "serve.json": _serve,
    "finetune.json": _finetune,
    "load_search.json": _load_search,
    "cluster.json": _cluster,
    "warehouse.json": _warehouse,
}


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def generated() -> dict[str, str]:
    """Results file name → its block (markdown)."""
    return {name: "\n".join(render(load(name))) for name, render in TABLES.items()}


def block(text: str, name: str) -> str:
    begin, end = markers(name)
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def _replace(text: str, name: str, content: str) -> str:
    begin, end = markers(name)
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{content}\n{end}{rest.split(end, 1)[1]}"


if __name__ == "__main__":
    blocks = generated()
    if "--write" in sys.argv:
        text = PAGE.read_text()
        for name, content in blocks.items():
            text = _replace(text, name, content)
        PAGE.write_text(text)
    for name, content in blocks.items():
        print(f"## {name}\n\n{content}\n")
