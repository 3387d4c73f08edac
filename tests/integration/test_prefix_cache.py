"""The shared-prefix KV cache on the real packaged SmolLM2: greedy answers to real RAG prompts
(the ``rag_answer`` template, sample-corpus chunks) are the same strings and token counts with
and without it, one prompt at a time and in a left-padded batch."""

from __future__ import annotations

import pytest

from llmops_dagster.config import Settings
from llmops_dagster.evaluate.golden import load_golden
from llmops_dagster.models.base import Generation
from llmops_dagster.models.local import LoadedModel, LocalTransformersGenerator, load_base_model
from llmops_dagster.models.spec import LocalModelSpec
from llmops_dagster.rag.prompts import load_prompt
from llmops_dagster.train.dataset import load_corpus_passages
from tests.support.stubs import hit

pytestmark = pytest.mark.integration

MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    settings = Settings()
    # Every core, as an evaluation loads the model (eval_torch_threads): nothing else computes
    # while these tests generate.
    return load_base_model(
        LocalModelSpec(
            model=settings.models.generator_model,
            gguf_file=settings.models.generator_gguf_file,
            cache_dir=settings.models_cache_dir,
            threads=settings.models.eval_torch_threads,
        )
    )


@pytest.fixture(scope="module")
def prompts() -> list[list[dict[str, str]]]:
    """Three golden questions with 1, 2 and 3 sample-corpus chunks: prompts of three lengths."""
    settings = Settings()
    by_doc = load_corpus_passages(settings.corpus.sample_data_dir, max_words=80)
    passages = [p for doc in sorted(by_doc) for p in by_doc[doc]]
    questions = [item.question for item in load_golden().items[:3]]
    template = load_prompt()
    return [
        template.messages(
            question,
            [hit(p.chunk_id, p.doc_id, p.text, p.title) for p in passages[3 * i : 3 * i + i + 1]],
        )
        for i, question in enumerate(questions)
    ]


Output = tuple[str, int, int, str | None]


def _outputs(generations: list[Generation]) -> list[Output]:
    return [(g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in generations]


@pytest.fixture(scope="module")
def one_by_one(loaded: LoadedModel, prompts: list[list[dict[str, str]]]) -> list[Output]:
    """The reference: each prompt alone, no prefix cache, in the caller's order. Generated once
    for the module: greedy decoding on a model nothing changes gives these every time."""
    plain = LocalTransformersGenerator(loaded, batch_size=1, prefix_cache=False)
    outputs = _outputs(plain.generate(prompts, max_new_tokens=MAX_NEW_TOKENS))
    assert plain.prefix_caches.built == 0
    return outputs


def test_prompts_have_three_lengths_and_a_long_shared_prefix(
    loaded: LoadedModel, prompts: list[list[dict[str, str]]]
) -> None:
    generator = LocalTransformersGenerator(loaded, batch_size=1)
    ids = [
        generator.tokenizer(generator.apply_chat_template(p), add_special_tokens=False)["input_ids"]
        for p in prompts
    ]
    assert len({len(i) for i in ids}) == 3
    prefix = generator.prefix_caches.prefix_for(ids)
    # The system message + the user turn up to the first chunk's id: the same for every prompt.
    assert generator.tokenizer.decode(list(prefix)).endswith('Context:\n<chunk id="')
    assert len(prefix) >= 100


def test_greedy_answers_are_identical_with_and_without_prefix_cache_one_by_one(
    loaded: LoadedModel, prompts: list[list[dict[str, str]]], one_by_one: list[Output]
) -> None:
    cached = LocalTransformersGenerator(loaded, batch_size=1, prefix_cache=True)

    assert _outputs(cached.generate(prompts, max_new_tokens=MAX_NEW_TOKENS)) == one_by_one
    # One prefix for the call, prefilled once and reused by the two other prompts.
    assert (cached.prefix_caches.built, cached.prefix_caches.hits) == (1, 2)


def test_single_prompt_calls_learn_the_prefix_from_the_second_call_on(
    loaded: LoadedModel, prompts: list[list[dict[str, str]]], one_by_one: list[Output]
) -> None:
    cached = LocalTransformersGenerator(loaded, batch_size=1, prefix_cache=True)

    got = []
    for prompt in prompts:  # serving: one question per call
        got.extend(_outputs(cached.generate([prompt], max_new_tokens=MAX_NEW_TOKENS)))
    assert got == one_by_one
    # First call: nothing to compare with; second: prefix found and built; third: reused.
    assert (cached.prefix_caches.built, cached.prefix_caches.hits) == (1, 1)


def test_greedy_answers_are_identical_with_and_without_prefix_cache_in_a_padded_batch(
    loaded: LoadedModel, prompts: list[list[dict[str, str]]]
) -> None:
    # One padded batch of three: side by side on two threads they would be two batches.
    plain = LocalTransformersGenerator(
        loaded, batch_size=3, prefix_cache=False, parallel_batches=False
    )
    cached = LocalTransformersGenerator(
        loaded, batch_size=3, prefix_cache=True, parallel_batches=False
    )

    expected = _outputs(plain.generate(prompts, max_new_tokens=MAX_NEW_TOKENS))
    got = _outputs(cached.generate(prompts, max_new_tokens=MAX_NEW_TOKENS))
    assert got == expected
    assert (cached.prefix_caches.built, cached.prefix_caches.hits) == (1, 0)
    # Padding is not counted as prompt: the two shorter prompts' counts are their own lengths.
    assert len({g[1] for g in got}) == 3


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix-cache", "plain"])
def test_answers_come_back_in_the_callers_order_when_batches_are_formed_by_length(
    loaded: LoadedModel,
    prompts: list[list[dict[str, str]]],
    one_by_one: list[Output],
    prefix_cache: bool,
) -> None:
    # Longest first, two per batch: ordered by length the batches are [shortest, middle] and
    # [longest], not the caller's [longest, shortest] and [middle].
    batched = LocalTransformersGenerator(loaded, batch_size=2, prefix_cache=prefix_cache)
    got = _outputs(batched.generate(prompts[::-1], max_new_tokens=MAX_NEW_TOKENS))
    assert got == one_by_one[::-1]
    assert [g[1] for g in got] == sorted((g[1] for g in got), reverse=True)


def test_the_generator_is_loaded_with_grouped_query_attention_in_place(
    loaded: LoadedModel,
) -> None:
    from llmops_dagster.models.attention import GQA_SDPA

    assert loaded.model.config._attn_implementation == GQA_SDPA
    assert loaded.model.model.layers[0].self_attn.num_key_value_groups == 3


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix-cache", "plain"])
def test_batches_run_side_by_side_on_one_thread_each_and_give_the_serial_answers(
    loaded: LoadedModel,
    prompts: list[list[dict[str, str]]],
    prefix_cache: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import torch

    from llmops_dagster.models.threads import torch_threads

    serial = LocalTransformersGenerator(
        loaded, batch_size=1, prefix_cache=prefix_cache, parallel_batches=False
    )
    parallel = LocalTransformersGenerator(loaded, batch_size=1, prefix_cache=prefix_cache)
    seen: list[tuple[str, int]] = []
    run_batch = LocalTransformersGenerator._generate_batch

    def recording(self: LocalTransformersGenerator, *args: object, **kwargs: object) -> object:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return run_batch(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalTransformersGenerator, "_generate_batch", recording)
    with torch_threads(2):
        expected = _outputs(serial.generate(prompts, max_new_tokens=MAX_NEW_TOKENS))
        assert seen == [(threading.current_thread().name, 2)] * 3
        seen.clear()
        got = _outputs(parallel.generate(prompts, max_new_tokens=MAX_NEW_TOKENS))
        after = torch.get_num_threads()
    assert got == expected
    # Three one-prompt batches on two worker threads (as many as torch had), one thread each,
    # and the process's thread count is given back.
    assert len(seen) == 3
    assert {threads for _, threads in seen} == {1}
    assert len({name for name, _ in seen}) == 2
    assert all(name.startswith("llmops-generate") for name, _ in seen)
    assert after == 2
