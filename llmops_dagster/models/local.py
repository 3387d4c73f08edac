"""Local transformers models: load once per process, generate with one loop.

Why a process-level cache: Dagster assets, the CLI and tests ask for the same model many
times; one load per (model, device) — and per adapter — per process (:data:`MODELS`).

Why one generate loop: answering questions and judging them (constrained JSON decoding) differ
only in per-call decoding rules, passed as a :class:`DecodingConstraint`. Both go through
:meth:`LocalTransformersGenerator.generate`, under the model's lock: two callers' ``generate``
calls at full threads each only fight over the cores. Inside one call, the batches may run side
by side, one torch thread each (:meth:`LocalTransformersGenerator._run_batches`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_dagster.files import publish_dir
from llmops_dagster.memo import ProcessCache
from llmops_dagster.models.attention import use_gqa_attention
from llmops_dagster.models.base import (
    Generation,
    GeneratorConfigError,
    Messages,
    PromptInput,
    is_messages,
)
from llmops_dagster.models.prefix_cache import PrefixCacheStore
from llmops_dagster.models.source import (
    CONVERTED_CACHE_FORMAT,
    CONVERTED_MARKER,
    ModelSource,
    converted_cache_dir,
    dtype_of,
    pick_device,
    resolve_model_source,
    resolve_precision,
)
from llmops_dagster.models.spec import LocalModelSpec
from llmops_dagster.models.threads import torch_threads

if TYPE_CHECKING:  # torch/transformers are heavy: imported when a model is loaded.
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: Any
    source: ModelSource
    device: str
    load_seconds: float
    #: Where the weights were read from this time (the converted cache, the GGUF, a folder).
    loaded_from: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: True for the instance held by :data:`MODELS` (other callers use it: never train it).
    shared: bool = False
    #: The weights' format (``float32`` / ``bfloat16``), resolved from the spec.
    precision: str = "float32"


#: Loaded base models and base+adapter models of this process, keyed by what they are.
MODELS: ProcessCache[LoadedModel] = ProcessCache("local-models")


def load_base_model(spec: LocalModelSpec, *, fresh: bool = False) -> LoadedModel:
    """The base model + tokenizer ``spec`` names, from the per-process cache.

    Sets torch's intra-op threads to ``spec.threads``. ``fresh=True`` returns a private copy
    (for training, or for injecting LoRA layers) that leaves the cached one untouched.
    """
    # Validate before importing torch: a typo fails in milliseconds.
    source = resolve_model_source(spec.model, spec.gguf_file)
    import torch

    torch.set_num_threads(max(1, spec.threads))
    device = pick_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    loaded = MODELS.get(
        ("base", source.display, device, precision),
        lambda: _load(Path(spec.cache_dir), source, device, precision),
    )
    if not fresh:
        return loaded
    return replace(loaded, model=copy.deepcopy(loaded.model), lock=threading.Lock(), shared=False)


def batch_width(count: int, batch_size: int, workers: int) -> int:
    """Rows per batch for ``count`` prompts: at most ``batch_size``, as even as the batches
    allow, and with ``workers`` batches side by side a number of batches that is a multiple of
    ``workers``, so that no core idles through a last, lone batch (24 prompts, 8 a batch, 2
    workers: 4 batches of 6, not 3 of 8). Where a prompt lands does not change its answer
    (tested), only the speed."""
    batches = -(-count // max(1, batch_size))
    if workers > 1 and batches % workers:
        batches += workers - batches % workers
    return max(1, -(-count // max(1, batches)))


def length_order(rows: Sequence[Sequence[int]]) -> list[int]:
    """Indices of ``rows`` from the shortest to the longest (ties in their given order)."""
    return sorted(range(len(rows)), key=lambda i: len(rows[i]))


def _write_converted_copy(source: ModelSource, target: Path) -> Callable[[Path], None]:
    """A ``publish_dir`` builder: de-quantise the GGUF and save it as safetensors."""

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to safetensors under %s (once)", source.display, target)
        tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
        # The GGUF quantizer refuses save_pretrained; the tensors are already dequantised.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED_MARKER).write_text(
            json.dumps({"converted_from": target.name, "format": CONVERTED_CACHE_FORMAT})
        )

    return build


def converted_copy(cache_dir: Path, source: ModelSource) -> Path | None:
    """The safetensors copy of a GGUF model under ``cache_dir``, de-quantised on first use
    (about 45 s for SmolLM2 on two cores; a later load reads it in about a second); ``None``
    for a model that is already a folder or a hub id."""
    if not source.gguf_file:
        return None
    target = converted_cache_dir(cache_dir, source)
    return publish_dir(
        target, _write_converted_copy(source, target), complete_marker=CONVERTED_MARKER
    )


def load_location(cache_dir: Path, source: ModelSource) -> str:
    """Where the model and tokenizer of ``source`` are read from: the converted copy of a GGUF
    (made on first use), else the folder or hub id itself."""
    converted = converted_copy(cache_dir, source)
    return str(converted) if converted is not None else source.location


def prepare_models(spec: LocalModelSpec) -> Path | None:
    """Convert the model ``spec`` names once, without loading it (set-up's step, so the
    first pipeline run does not pay the conversion): the converted folder, or ``None`` when
    there is nothing to convert."""
    try:
        return converted_copy(
            Path(spec.cache_dir), resolve_model_source(spec.model, spec.gguf_file)
        )
    except OSError as exc:
        raise GeneratorConfigError(f"cannot convert generator {spec.model}: {exc}") from exc


def _load(cache_dir: Path, source: ModelSource, device: str, precision: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    try:
        location = load_location(cache_dir, source)
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype_of(precision))
    except OSError as exc:
        raise GeneratorConfigError(
            f"cannot load generator LLMOPS_GENERATOR_MODEL={source.display}: {exc}. "
            "Offline (HF_HUB_OFFLINE=1) a hub id must already be in the local HF cache; "
            "otherwise point LLMOPS_GENERATOR_MODEL at a model folder."
        ) from exc
    model.to(device)
    model.eval()
    use_gqa_attention(model)
    tokenizer = _prepare_tokenizer(tokenizer, model)
    seconds = time.perf_counter() - started
    log.info("loaded %s on %s (%s) in %.1fs", source.model_id, device, precision, seconds)
    return LoadedModel(
        model, tokenizer, source, device, seconds, location, shared=True, precision=precision
    )


def _prepare_tokenizer(tokenizer: Any, model: PreTrainedModel) -> Any:
    tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding
    if tokenizer.pad_token_id is None:
        pad_id = model.generation_config.pad_token_id
        if pad_id is None:
            pad_id = model.generation_config.eos_token_id
        if isinstance(pad_id, list):
            pad_id = pad_id[0]
        if pad_id is not None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad_id))
        else:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(model: PreTrainedModel, tokenizer: Any) -> list[int]:
    """End-of-turn ids. GGUF tokenizers can name the wrong eos (SmolLM2's says <|im_start|>);
    the generation config and the chat end-of-turn token are the reliable ones."""
    ids: list[int] = []
    eos = model.generation_config.eos_token_id
    ids.extend(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.append(token_id)
    if not ids and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(int(i) for i in ids))


def base_fingerprint(model: PreTrainedModel) -> str:
    """A short hash of the architecture (type, sizes, vocab): adapters only fit this shape."""
    cfg = model.config
    keys = (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
    )
    payload = json.dumps({k: getattr(cfg, k, None) for k in keys}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DecodingConstraint:
    """Per-call decoding rules on top of a generator's defaults (the local judge's JSON mode).

    ``prefix_allowed_tokens_fn`` is handed to ``model.generate`` as is (e.g. lm-format-enforcer's
    function; build a new one per call, it keeps state). ``stop_when`` is asked, after every
    step, whether a row's completion text so far is finished (e.g. "the JSON object closed").
    """

    prefix_allowed_tokens_fn: Callable[[int, Any], list[int]] | None = None
    stop_when: Callable[[str], bool] | None = None
    repetition_penalty: float | None = None


def _stop_when_criteria(tokenizer: Any, prompt_len: int, stop_when: Callable[[str], bool]) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopWhen(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = [
                stop_when(tokenizer.decode(row[prompt_len:], skip_special_tokens=True))
                for row in input_ids
            ]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_StopWhen()])


class LocalTransformersGenerator:
    """A local causal LM (any HF id/folder, or the packaged SmolLM2 GGUF), greedy by default.

    Prompts in one call are ordered by token length and generated in batches of ``batch_size``
    with left padding (results come back in the caller's order); each result's token counts
    exclude padding. Grouped-query attention reads the shared key/value heads in place
    (:mod:`.attention`). With ``prefix_cache`` (default) the prompts' longest
    common token prefix is prefilled once and each batch generates from a copy of its KV cache
    (rows laid out ``[prefix][padding][suffix]``; :mod:`.prefix_cache`): the same greedy
    tokens, less prefill per prompt. With ``parallel_batches`` (default) a call of several
    batches runs them side by side, as many at a time as torch has threads, each on one thread.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        model_id: str | None = None,
        batch_size: int = 8,
        repetition_penalty: float = 1.1,
        prefix_cache: bool = True,
        order_by_length: bool = True,
        parallel_batches: bool = True,
    ) -> None:
        self._loaded = loaded
        self._model_id = model_id or loaded.source.model_id
        self.batch_size = max(1, batch_size)
        # Greedy decoding of a 135M model loops easily; a mild penalty keeps answers short.
        self.repetition_penalty = repetition_penalty
        self._stop_ids = stop_token_ids(loaded.model, loaded.tokenizer)
        # A speed setting only: greedy output is the same with or without it (tested), so it
        # is no part of a bundle's generator pin.
        self.prefix_cache = prefix_cache
        # Also a speed setting only: in float32 a row's greedy answer does not depend on the
        # other rows of its batch (tested); in bfloat16 it can, ordered or not (see
        # LLMOPS_GENERATOR_PRECISION).
        self.order_by_length = order_by_length
        # A speed setting too (see _run_batches); the answers are those of one batch at a time.
        self.parallel_batches = parallel_batches
        self._prefixes = PrefixCacheStore(loaded.model, loaded.device)
        # The prefix store is not thread-safe; batches running side by side share it.
        self._prefix_lock = threading.Lock()

    @property
    def prefix_caches(self) -> PrefixCacheStore:
        """This generator's shared-prefix KV caches (see :mod:`.prefix_cache`)."""
        return self._prefixes

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def loaded(self) -> LoadedModel:
        return self._loaded

    @property
    def tokenizer(self) -> Any:
        return self._loaded.tokenizer

    @property
    def model(self) -> PreTrainedModel:
        return self._loaded.model

    @property
    def device(self) -> str:
        return self._loaded.device

    @property
    def lock(self) -> threading.Lock:
        """Held during every ``generate``; shared by everything that uses this model."""
        return self._loaded.lock

    @property
    def stop_ids(self) -> list[int]:
        """The token ids that end a completion."""
        return list(self._stop_ids)

    def apply_chat_template(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )

    def _as_text(self, prompt: PromptInput) -> str:
        return self.apply_chat_template(prompt) if is_messages(prompt) else prompt  # type: ignore[arg-type]

    def generate(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        constraint: DecodingConstraint | None = None,
    ) -> list[Generation]:
        texts = [self._as_text(p) for p in prompts]
        if constraint is not None:
            # Constrained decoding (the local judge) keeps the plain path in the caller's order:
            # its token filter reads the rows as left-padded prompts by their batch position,
            # and the judge's prompts share little anyway.
            return self._generate_plain(texts, max_new_tokens, temperature, constraint)
        # The chat template already holds the special tokens; don't add a second BOS.
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        # Shortest first, so that a batch holds prompts of similar length: every row of a batch
        # is padded to its longest, and on CPU padding is prefill paid for nothing. Each row's
        # tokens, positions and mask are the same in any batch, so the answers are too (tested).
        order = length_order(ids) if self.order_by_length else list(range(len(ids)))
        ordered = [ids[i] for i in order]
        if self.prefix_cache and ordered:
            generated = self._generate_with_prefix(ordered, max_new_tokens, temperature)
        else:
            generated = self._generate_plain(
                [texts[i] for i in order], max_new_tokens, temperature, None
            )
        results: list[Generation | None] = [None] * len(texts)
        for position, generation in zip(order, generated, strict=True):
            results[position] = generation
        return results  # type: ignore[return-value]

    def _generate_plain(
        self,
        texts: list[str],
        max_new_tokens: int,
        temperature: float,
        constraint: DecodingConstraint | None,
    ) -> list[Generation]:
        """Batches of ``texts`` in their order, left-padded, without a prefix cache."""
        jobs: list[tuple[dict[str, Any], tuple[int, ...]]] = []
        per_batch = self._batch_width(len(texts), constraint)
        for start in range(0, len(texts), per_batch):
            batch = texts[start : start + per_batch]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            jobs.append((dict(enc), ()))
        return self._run_batches(jobs, max_new_tokens, temperature, constraint)

    def _generate_with_prefix(
        self, ids: list[list[int]], max_new_tokens: int, temperature: float
    ) -> list[Generation]:
        """Batches of the token rows ``ids`` in their order, generated from the KV cache of the
        call's common token prefix (one prefix for the whole call: every batch starts with it)."""
        import torch

        tokenizer = self.tokenizer
        with self._prefix_lock:
            prefix = self._prefixes.prefix_for(ids)
        jobs: list[tuple[dict[str, Any], tuple[int, ...]]] = []
        per_batch = self._batch_width(len(ids), None)
        for start in range(0, len(ids), per_batch):
            batch = ids[start : start + per_batch]
            width = max(len(row) for row in batch)
            cut = len(prefix)
            # [prefix][padding][suffix]: the pads sit where left padding would put them
            # relative to the suffix, and each row's positions count its unmasked tokens only.
            rows = [
                row[:cut] + [tokenizer.pad_token_id] * (width - len(row)) + row[cut:]
                for row in batch
            ]
            masks = [[1] * cut + [0] * (width - len(row)) + [1] * (len(row) - cut) for row in batch]
            enc = {
                "input_ids": torch.tensor(rows, dtype=torch.long),
                "attention_mask": torch.tensor(masks, dtype=torch.long),
            }
            jobs.append((enc, prefix))
        return self._run_batches(jobs, max_new_tokens, temperature, None)

    def _workers(self, jobs: int, constraint: DecodingConstraint | None) -> int:
        """How many batches :meth:`_run_batches` runs at a time: one per torch thread."""
        import torch

        if not self.parallel_batches or constraint is not None:
            return 1
        return max(1, min(torch.get_num_threads(), jobs))

    def _batch_width(self, count: int, constraint: DecodingConstraint | None) -> int:
        return batch_width(count, self.batch_size, self._workers(count, constraint))

    def _run_batches(
        self,
        jobs: Sequence[tuple[dict[str, Any], tuple[int, ...]]],
        max_new_tokens: int,
        temperature: float,
        constraint: DecodingConstraint | None,
    ) -> list[Generation]:
        """Generate the batches ``jobs`` (encoded rows, prefix) under the model's lock: one
        after another, or side by side with one torch thread each.

        Why side by side: on CPU, prefill is a matrix product per layer whose speed-up from a
        second thread is well below 2x, while two batches on one thread each keep both cores
        busy (1.1x faster per answer on two cores, float32: generation.json's parallel_batches
        step, 6.746 to 6.0694 s per golden case, ad hoc runs up to 1.2x). The answers are the same:
        each row's greedy tokens do not depend on the thread count (tested). Each batch has its
        own inputs and its own KV cache, and ``generate`` with a dynamic cache changes nothing
        on the model, so running the same model in two threads is safe. The thread count is
        process-wide for the call, which the model's lock makes this process's only generation.
        The constrained (judge) path stays serial: DeepEval already calls it from several
        threads, one question at a time.
        """

        def run(job: tuple[dict[str, Any], tuple[int, ...]]) -> list[Generation]:
            enc, prefix = job
            return self._generate_batch(enc, max_new_tokens, temperature, constraint, prefix)

        with self.lock:
            workers = self._workers(len(jobs), constraint)
            if workers < 2:
                return [generation for job in jobs for generation in run(job)]
            with (
                torch_threads(1),
                ThreadPoolExecutor(workers, thread_name_prefix="llmops-generate") as pool,
            ):
                batches = list(pool.map(run, jobs))
        return [generation for batch in batches for generation in batch]

    def _decoding_options(
        self, temperature: float, constraint: DecodingConstraint | None, prompt_len: int
    ) -> dict[str, Any]:
        options: dict[str, Any] = {
            "do_sample": False,
            "repetition_penalty": self.repetition_penalty,
        }
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature)
        if constraint is None:
            return options
        if constraint.repetition_penalty is not None:
            options["repetition_penalty"] = constraint.repetition_penalty
        if constraint.prefix_allowed_tokens_fn is not None:
            options["prefix_allowed_tokens_fn"] = constraint.prefix_allowed_tokens_fn
        if constraint.stop_when is not None:
            options["stopping_criteria"] = _stop_when_criteria(
                self.tokenizer, prompt_len, constraint.stop_when
            )
        return options

    def _generate_batch(
        self,
        enc: dict[str, Any],
        max_new_tokens: int,
        temperature: float,
        constraint: DecodingConstraint | None,
        prefix: tuple[int, ...] = (),
    ) -> list[Generation]:
        """Generate one batch: ``enc`` holds ``input_ids`` and ``attention_mask``; with a
        ``prefix``, every row starts with it and generation starts from its KV cache. The
        caller holds the model's lock (:meth:`_run_batches`)."""
        import torch

        tokenizer, model = self.tokenizer, self.model
        enc = {k: v.to(self.device) for k, v in enc.items()}
        prompt_len = enc["input_ids"].shape[1]
        options = self._decoding_options(temperature, constraint, prompt_len)
        started = time.perf_counter()
        with torch.inference_mode():
            if prefix:
                with self._prefix_lock:
                    rows = enc["input_ids"].shape[0]
                    options["past_key_values"] = self._prefixes.cache_for(prefix, rows)
            output = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=self._stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                **options,
            )
        seconds = time.perf_counter() - started
        stop = set(self._stop_ids)
        stop_when = constraint.stop_when if constraint is not None else None
        generations = []
        for row, mask in zip(output, enc["attention_mask"], strict=True):
            new = row[prompt_len:].tolist()
            hit_stop = False
            for i, token_id in enumerate(new):
                if token_id in stop:
                    new, hit_stop = new[:i], True
                    break
            if stop_when is not None and not hit_stop:
                # A row ``stop_when`` finished while others went on is padded to their length.
                while new and new[-1] == tokenizer.pad_token_id:
                    new.pop()
            text = tokenizer.decode(new, skip_special_tokens=True).strip()
            finished = hit_stop or (stop_when is not None and stop_when(text))
            generations.append(
                Generation(
                    text=text,
                    prompt_tokens=int(mask.sum().item()),
                    completion_tokens=len(new) + int(hit_stop),
                    seconds=seconds,
                    finish_reason="stop" if finished else "length",
                )
            )
        return generations


def load_local_generator(spec: LocalModelSpec, **kwargs: Any) -> LocalTransformersGenerator:
    """The base model ``spec`` names as a generator, loaded once per process.

    ``kwargs`` go to :class:`LocalTransformersGenerator` (``batch_size``, ``repetition_penalty``).
    """
    return LocalTransformersGenerator(load_base_model(spec), **kwargs)
