"""LLM judges for DeepEval's judge metrics: the local generator's model or an OpenAI-compatible API.

Why constrained decoding: DeepEval asks its judge for JSON matching a pydantic schema (claims,
verdicts, a G-Eval score…). A 135M model asked plainly rarely produces parseable JSON. With
lm-format-enforcer every generated token must keep the output a valid prefix of the schema's JSON,
so the text always parses; the schema is first *bounded* (``maxLength`` on strings, ``maxItems``
on arrays) so the JSON can complete within the token budget, generation stops as soon as the
top-level object closes, and a repetition penalty keeps a small model from looping inside a
string. The local judge runs through the generator's own generate loop with those rules passed
as a :class:`~llmops_dagster.models.local.DecodingConstraint` (and so under the generator's lock).
What comes out is then validated and clamped (:mod:`llmops_dagster.evaluate.judge_schema`).

Why count calls: an answer that does not fit the schema raises
:class:`~llmops_dagster.evaluate.judge_schema.JudgeOutputError` (DeepEval then records the metric
as errored for that case, scored 0), and a reply that had to be repaired is a judge-quality
signal. Both judges share :class:`SchemaJudge`, which counts every call, the repaired ones and the
failed ones (:class:`JudgeStats`); the evaluation reports the counts of its run.

Why ``JudgeSpec.capable``: on this stack a 135M judge yields *parseable but meaningless* scores
(reasons copy the template; empty claim lists, which DeepEval would score a trivial 1.0, are
errors now). Judge metrics are therefore
always computed and reported, but only gate promotion when the judge is declared capable.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from deepeval.models import DeepEvalBaseLLM
from pydantic import BaseModel

from llmops_dagster.evaluate.judge_schema import (
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_STRING_CHARS,
    JudgeError,
    JudgeOutputError,
    SchemaT,
    bounded_json_schema,
    clamp_scores,
    coerce_to_schema,
    extract_json_object,
    json_object_complete,
    parse_score_range,
)
from llmops_dagster.memo import ProcessCache
from llmops_dagster.models.base import GeneratorError
from llmops_dagster.models.spec import JudgeSpec, OpenAIEndpointSpec

if TYPE_CHECKING:
    from llmops_dagster.models.local import DecodingConstraint, LocalTransformersGenerator

__all__ = [
    "JudgeError",
    "JudgeOutputError",
    "JudgeStats",
    "LocalJudge",
    "OpenAICompatibleJudge",
    "SchemaJudge",
    "bounded_json_schema",
    "build_judge",
    "clamp_scores",
    "coerce_to_schema",
    "extract_json_object",
    "judge_stats",
    "parse_score_range",
]

#: lm-format-enforcer's per-tokenizer tables (a pass over the whole vocabulary), built once.
_TOKENIZER_TABLES: ProcessCache[Any] = ProcessCache("lm-format-enforcer-tokenizers")


@dataclass
class JudgeStats:
    """Calls a judge made, how many needed JSON repair and how many failed (raised).

    Thread-safe: DeepEval runs a judge's calls concurrently (the local judge in worker threads).
    """

    calls: int = 0
    repaired: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, *, repaired: bool = False, failed: bool = False) -> None:
        with self._lock:
            self.calls += 1
            self.repaired += int(repaired)
            self.failed += int(failed)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"calls": self.calls, "repaired": self.repaired, "failed": self.failed}


def judge_stats(judge: Any) -> dict[str, int] | None:
    """``{"calls", "repaired", "failed"}`` of a :class:`SchemaJudge`; None for another judge
    (a ``DeepEvalBaseLLM`` that keeps no count)."""
    stats = getattr(judge, "stats", None)
    return stats.snapshot() if isinstance(stats, JudgeStats) else None


class SchemaJudge(DeepEvalBaseLLM):
    """A DeepEval judge that turns raw text into the requested schema, and counts.

    Subclasses implement :meth:`_complete` (and may override :meth:`_acomplete`); with a
    ``schema`` the text goes through :func:`coerce_to_schema` (clamped into the prompt's score
    range, or ``score_range`` when the prompt names none). A call that raises — the model or
    endpoint failed, or the output does not fit (:class:`JudgeOutputError`) — is counted as
    failed and the error reaches DeepEval, which records the metric as errored for that case.
    """

    #: Used when the prompt names no range; None = clamp only ranges the prompt states.
    score_range: tuple[float, float] | None = None

    def __init__(self, model: str) -> None:
        self.stats = JudgeStats()
        super().__init__(model=model)

    @property
    def calls(self) -> int:
        return self.stats.calls

    @property
    def repaired_calls(self) -> int:
        """Calls whose output needed JSON repair (truncation): a judge-quality signal."""
        return self.stats.repaired

    @property
    def failed_calls(self) -> int:
        return self.stats.failed

    def get_model_name(self, *args: Any, **kwargs: Any) -> str:
        return self.name

    def _complete(self, prompt: str, schema: type[BaseModel] | None) -> str:
        raise NotImplementedError

    async def _acomplete(self, prompt: str, schema: type[BaseModel] | None) -> str:
        # A blocking completion runs in a worker thread so the event loop keeps going.
        return await asyncio.to_thread(self._complete, prompt, schema)

    def _parse(self, text: str, prompt: str, schema: type[SchemaT] | None) -> tuple[Any, bool]:
        if schema is None:
            return text, False
        score_range = parse_score_range(prompt) or self.score_range
        return coerce_to_schema(text, schema, score_range=score_range)

    def generate(self, prompt: Any, schema: type[SchemaT] | None = None, **kwargs: Any) -> Any:
        try:
            out, repaired = self._parse(self._complete(str(prompt), schema), str(prompt), schema)
        except Exception:
            self.stats.record(failed=True)
            raise
        self.stats.record(repaired=repaired)
        return out

    async def a_generate(
        self, prompt: Any, schema: type[SchemaT] | None = None, **kwargs: Any
    ) -> Any:
        try:
            text = await self._acomplete(str(prompt), schema)
            out, repaired = self._parse(text, str(prompt), schema)
        except Exception:
            self.stats.record(failed=True)
            raise
        self.stats.record(repaired=repaired)
        return out


def build_judge(
    spec: JudgeSpec, *, generator: LocalTransformersGenerator | None = None
) -> DeepEvalBaseLLM | None:
    """The judge ``spec`` names; ``local`` reuses ``generator``'s already-loaded model."""
    if spec.kind == "none":
        return None
    if spec.kind == "local":
        from llmops_dagster.models.local import LocalTransformersGenerator

        if not isinstance(generator, LocalTransformersGenerator):
            raise JudgeError(
                "judge kind 'local' needs the loaded local generator (generator backend "
                f"local), got {type(generator).__name__}"
            )
        return LocalJudge(generator, max_new_tokens=spec.max_new_tokens)
    if spec.kind != "openai":
        raise JudgeError(f"judge kind {spec.kind!r}: expected none, local or openai")
    if spec.endpoint is None:
        raise JudgeError(
            "judge kind 'openai' needs an endpoint: the judge's base URL and model name "
            "(LLMOPS_JUDGE_BASE_URL, LLMOPS_JUDGE_MODEL)"
        )
    return OpenAICompatibleJudge(spec.endpoint)


# --------------------------------------------------------------------------------------------
# Local judge: the generator's loop with constrained JSON decoding
# --------------------------------------------------------------------------------------------


def _lmfe_transformers() -> types.ModuleType:
    """lm-format-enforcer's transformers integration, importable under transformers 5.

    lm-format-enforcer 0.11 imports ``PreTrainedTokenizerBase`` from
    ``transformers.tokenization_utils``; transformers 5 keeps that module but moved the class to
    ``tokenization_utils_base``. The shim re-exposes the class where the integration looks.
    """
    from transformers import tokenization_utils_base

    base_cls = tokenization_utils_base.PreTrainedTokenizerBase
    try:
        import transformers.tokenization_utils as legacy
    except ImportError:
        legacy = types.ModuleType("transformers.tokenization_utils")
        sys.modules["transformers.tokenization_utils"] = legacy
    if not hasattr(legacy, "PreTrainedTokenizerBase"):
        legacy.PreTrainedTokenizerBase = base_cls  # type: ignore[attr-defined]
    from lmformatenforcer.integrations import transformers as integration

    return integration


def _tokenizer_tables(tokenizer: Any, eos_ids: list[int]) -> Any:
    """lm-format-enforcer's tables for ``tokenizer``. They hold the tokenizer (``decode``), so
    its ``id`` cannot be reused by another object while cached."""

    def build() -> Any:
        from lmformatenforcer import TokenEnforcerTokenizerData

        integration = _lmfe_transformers()
        vocab_size = len(tokenizer)
        regular = integration._build_regular_tokens_list(tokenizer, vocab_size)
        decode = lambda ids: tokenizer.decode(ids).rstrip("\ufffd")  # noqa: E731
        # The GGUF tokenizer names <|im_start|> as eos: pass the real end-of-turn ids.
        return TokenEnforcerTokenizerData(regular, decode, eos_ids, False, vocab_size)

    return _TOKENIZER_TABLES.get((id(tokenizer), tuple(eos_ids)), build)


class LocalJudge(SchemaJudge):
    """A DeepEval judge over an already-loaded local generator (the model is not loaded twice).

    With a ``schema`` the output is constrained to that schema's JSON and returned as an
    instance of it; without one, plain greedy text. Calls go through the generator's
    ``generate`` and so share its lock with answer generation.
    """

    def __init__(
        self,
        generator: LocalTransformersGenerator,
        *,
        max_new_tokens: int = 192,
        repetition_penalty: float = 1.3,
        max_string_chars: int = DEFAULT_MAX_STRING_CHARS,
        max_items: int = DEFAULT_MAX_ITEMS,
        score_range: tuple[float, float] | None = None,
    ) -> None:
        self.generator = generator
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.max_string_chars = max_string_chars
        self.max_items = max_items
        self.score_range = score_range
        super().__init__(model=f"local:{generator.model_id}")

    @classmethod
    def from_generator(cls, generator: LocalTransformersGenerator, **kwargs: Any) -> LocalJudge:
        return cls(generator, **kwargs)

    @property
    def lock(self) -> threading.Lock:
        return self.generator.lock

    # DeepEvalBaseLLM interface ----------------------------------------------------------------
    def load_model(self, *args: Any, **kwargs: Any) -> Any:
        return self.generator.model

    # ------------------------------------------------------------------------------------------
    def _constraint(self, schema: type[BaseModel] | None) -> DecodingConstraint:
        from llmops_dagster.models.local import DecodingConstraint

        if schema is None:
            return DecodingConstraint(repetition_penalty=self.repetition_penalty)
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser

        parser = JsonSchemaParser(
            bounded_json_schema(
                schema, max_string_chars=self.max_string_chars, max_items=self.max_items
            ),
            config=CharacterLevelParserConfig(
                max_consecutive_whitespaces=2, force_json_field_order=True
            ),
        )
        tables = _tokenizer_tables(self.generator.tokenizer, self.generator.stop_ids)
        return DecodingConstraint(
            prefix_allowed_tokens_fn=_lmfe_transformers().build_transformers_prefix_allowed_tokens_fn(
                tables, parser
            ),
            stop_when=json_object_complete,
            repetition_penalty=self.repetition_penalty,
        )

    def _complete(self, prompt: str, schema: type[BaseModel] | None) -> str:
        has_template = getattr(self.generator.tokenizer, "chat_template", None)
        request = [{"role": "user", "content": prompt}] if has_template else prompt
        [out] = self.generator.generate(
            [request], max_new_tokens=self.max_new_tokens, constraint=self._constraint(schema)
        )
        return out.text


# --------------------------------------------------------------------------------------------
# OpenAI-compatible judge
# --------------------------------------------------------------------------------------------


class OpenAICompatibleJudge(SchemaJudge):
    """A judge behind any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp, hosted).

    With a ``schema`` it asks for ``response_format`` JSON schema output (``json_mode`` =
    ``json_object`` or ``none`` for servers without it) and still validates and clamps locally:
    a reply that does not fit (a server that ignores ``response_format``) is an error of that
    metric on that case, counted, never a crashed evaluation nor a made-up pass.
    """

    def __init__(
        self,
        spec: OpenAIEndpointSpec,
        *,
        json_mode: Literal["json_schema", "json_object", "none"] = "json_schema",
        temperature: float = 0.0,
        http_client: Any = None,
        async_http_client: Any = None,
    ) -> None:
        from llmops_dagster.models.openai_client import OpenAIChatClient

        try:
            self.client = OpenAIChatClient(
                spec, http_client=http_client, async_http_client=async_http_client
            )
        except GeneratorError as exc:
            raise JudgeError(f"judge endpoint: {exc}") from exc
        self.json_mode = json_mode
        self.temperature = temperature
        super().__init__(model=f"openai-compatible:{spec.model}")

    def load_model(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.spec.model

    def _response_format(self, schema: type[BaseModel] | None) -> dict[str, Any] | None:
        if schema is None or self.json_mode == "none":
            return None
        if self.json_mode == "json_object":
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }

    def _request(self, prompt: Any, schema: type[BaseModel] | None) -> dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": str(prompt)}],
            "temperature": self.temperature,
            "response_format": self._response_format(schema),
        }

    def _failed(self, exc: GeneratorError) -> JudgeError:
        return JudgeError(f"judge endpoint {self.client.base_url} failed: {exc}")

    def _complete(self, prompt: str, schema: type[BaseModel] | None) -> str:
        try:
            return self.client.chat(**self._request(prompt, schema)).text
        except GeneratorError as exc:
            raise self._failed(exc) from exc

    async def _acomplete(self, prompt: str, schema: type[BaseModel] | None) -> str:
        try:
            return (await self.client.achat(**self._request(prompt, schema))).text
        except GeneratorError as exc:
            raise self._failed(exc) from exc
