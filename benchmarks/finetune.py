"""Fine-tuning benchmark: the project's LoRA path vs a plain transformers+peft loop, and a
held-out QA metric for the base model vs the adapter.

1. Throughput. ``train_lora`` (transformers ``Trainer``, completion-only loss, per-step MLflow
   logging) and a hand-written loop (same peft ``LoraConfig``, same tokenised rows, same batch
   size, AdamW + linear schedule, same seed) train for the same number of steps; each counts
   the real (non-pad) tokens it trained on and its wall time. ``tokens_per_s_ratio`` = project ÷
   plain: near 1.0 means the Trainer/MLflow plumbing costs nothing noticeable.
2. Held-out quality. The first ``--heldout`` golden questions (``data/golden/qa.jsonl``, never
   trained on) are answered by the base model and by base + the adapter just trained, with the
   passages of each question's labelled relevant documents that best match the question as
   context (ranked by the question only, not the reference answer). Metric: token F1 between
   the answer (citations stripped) and the reference answer, over content words.

Writes ``benchmarks/results/finetune.json``. The MLflow store and the adapter live in a temp
folder; the base model comes from the shared converted-model cache (LLMOPS_HOME/models). Runs
in a few minutes on 2 CPU cores with the defaults; ``--threads 1`` is faster than 2 on a
machine that other jobs share.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llmops_dagster.config import apply_offline_env_defaults

apply_offline_env_defaults()  # this script is where the process starts
from llmops_dagster.config import PROJECT_ROOT, Settings
from llmops_dagster.models.local import load_base_model, load_local_generator
from llmops_dagster.models.registry import load_adapter_generator
from llmops_dagster.models.spec import LocalModelSpec
from llmops_dagster.rag.answer import content_tokens
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.tracking.runs import open_run
from llmops_dagster.tracking.store import ensure_mlflow
from llmops_dagster.train.dataset import (
    build_sft_dataset,
    corpus_context_fn,
    load_qa_jsonl,
)
from llmops_dagster.train.lora import (
    CompletionCollator,
    LoraParams,
    lora_config,
    tokenize_split,
    train_lora,
)

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "finetune.json"
GOLDEN = PROJECT_ROOT / "data" / "golden" / "qa.jsonl"
_CITATION_RE = re.compile(r"\[\s*chunk[^\]]*\]", re.IGNORECASE)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style F1 over content words (stop words dropped, citations stripped)."""
    pred = Counter(content_tokens(_CITATION_RE.sub(" ", prediction)))
    ref = Counter(content_tokens(reference))
    common = sum((pred & ref).values())
    if not pred or not ref or common == 0:
        return 0.0
    precision, recall = common / sum(pred.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def plain_loop(spec: LocalModelSpec, dataset: Any, params: LoraParams) -> dict[str, float]:
    """The reference: peft + a hand-written AdamW loop over the same rows and batch size."""
    import torch
    from peft import get_peft_model
    from transformers import get_linear_schedule_with_warmup, set_seed

    set_seed(params.seed)
    base = load_base_model(spec, fresh=True)
    model = get_peft_model(base.model, lora_config(params))
    model.train()
    rows = tokenize_split(base.tokenizer, dataset.train, params.max_seq_len)
    collator = CompletionCollator(int(base.tokenizer.pad_token_id))
    collator.counting = True
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=params.learning_rate
    )
    schedule = get_linear_schedule_with_warmup(optimizer, params.warmup_steps, params.max_steps)
    order = random.Random(params.seed)
    started = time.perf_counter()
    step = 0
    while step < params.max_steps:
        indices = list(range(len(rows)))
        order.shuffle(indices)
        for start in range(0, len(indices) - params.batch_size + 1, params.batch_size):
            batch = collator([rows[i] for i in indices[start : start + params.batch_size]])
            batch = {k: v.to(base.device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss.detach())  # like Trainer's logging: sync on the loss every step
            step += 1
            if step >= params.max_steps:
                break
    seconds = time.perf_counter() - started
    return {
        "tokens": collator.tokens,
        "seconds": seconds,
        "tokens_per_s": collator.tokens / seconds,
    }


def heldout_f1(generator: Any, items: list[Any], context_fn: Any, max_new_tokens: int) -> float:
    prompt = load_prompt()
    messages = [prompt.messages(item.question, context_fn(item)) for item in items]
    outputs = generator.generate(messages, max_new_tokens=max_new_tokens)
    scores = [token_f1(o.text, i.reference_answer) for o, i in zip(outputs, items, strict=True)]
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-len", type=int, default=320)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    settings = Settings()
    spec = LocalModelSpec(
        model=settings.models.generator_model,
        gguf_file=settings.models.generator_gguf_file,
        cache_dir=settings.models_cache_dir,
        threads=args.threads or settings.models.torch_threads,
    )
    base = load_local_generator(spec)  # warm (and, once, create) the shared converted cache
    home = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    store = ensure_mlflow(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", "benchmark-finetune")
    sample_dir = settings.corpus.sample_data_dir
    context_fn = corpus_context_fn(sample_dir, k=2)
    dataset = build_sft_dataset(tokenizer=base.tokenizer, context_fn=context_fn)
    params = LoraParams(
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
        learning_rate=args.lr,
    )

    started = time.perf_counter()
    plain = plain_loop(spec, dataset, params)
    plain_wall = time.perf_counter() - started
    started = time.perf_counter()
    with open_run(store, run_name="benchmark-lora", tags={}, ui_url="http://127.0.0.1:5000") as run:
        result = train_lora(
            load_base_model(spec, fresh=True),
            dataset,
            run,
            max_steps=params.max_steps,
            batch_size=params.batch_size,
            max_seq_len=params.max_seq_len,
            learning_rate=params.learning_rate,
            index_version="benchmark",
            registered_model_name="benchmark-lora",
            output_dir=home / "adapter",
        )
    project_wall = time.perf_counter() - started

    golden = load_qa_jsonl(GOLDEN)[: args.heldout]
    heldout_context = corpus_context_fn(sample_dir, k=2, use_reference=False)
    started = time.perf_counter()
    base_f1 = heldout_f1(base, golden, heldout_context, args.max_new_tokens)
    adapter = load_adapter_generator(spec, result.adapter_dir)
    adapter_f1 = heldout_f1(adapter, golden, heldout_context, args.max_new_tokens)
    heldout_wall = time.perf_counter() - started

    report = {
        "tokens_per_s_ratio": round(result.tokens_per_s / plain["tokens_per_s"], 3),
        "heldout": {
            "base": round(base_f1, 4),
            "adapter": round(adapter_f1, 4),
            "metric": "token_f1",
        },
        "details": {
            "project_tokens_per_s": round(result.tokens_per_s, 1),
            "plain_tokens_per_s": round(plain["tokens_per_s"], 1),
            "project_train_tokens": result.train_tokens,
            "plain_train_tokens": plain["tokens"],
            "project_wall_s_incl_eval_and_mlflow": round(project_wall, 1),
            "plain_wall_s": round(plain_wall, 1),
            "eval_loss_before": result.eval_loss_before,
            "eval_loss_after": result.eval_loss_after,
            "heldout_questions": len(golden),
            "heldout_wall_s": round(heldout_wall, 1),
            "config": {
                "steps": params.max_steps,
                "batch_size": params.batch_size,
                "max_seq_len": params.max_seq_len,
                "learning_rate": params.learning_rate,
                "r": params.r,
                "alpha": params.alpha,
                "target_modules": list(params.target_modules),
                "n_train": len(dataset.train),
                "device": result.device,
                "torch_threads": spec.threads,
                "model": result.base_model_id,
            },
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
