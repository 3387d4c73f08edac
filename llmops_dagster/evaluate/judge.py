"""LLM judges for DeepEval's judge metrics: a local transformers model or an OpenAI-compatible API.

Why constrained decoding: DeepEval asks its judge for JSON matching a pydantic schema (claims,
verdicts, a G-Eval score…). A 135M model asked plainly rarely produces parseable JSON. With
lm-format-enforcer every generated token must keep the output a valid prefix of the schema's JSON,
so the text always parses; the schema is first *bounded* (``maxLength`` on strings, ``maxItems``
on arrays) so the JSON can complete within the token budget, generation stops as soon as the
top-level object closes, and a repetition penalty keeps a small model from looping inside a
string. What still comes out is then validated and numeric scores are clamped into the range
the metric's prompt asked for (a G-Eval score of 15 on a 0–10 scale would otherwise normalise
to 1.5).

Why ``judge_capable``: on this stack a 135M judge yields *parseable but meaningless* scores
(empty claim lists give a trivial 1.0, reasons copy the template). Judge metrics are therefore
always computed and reported, but only gate promotion when the configured judge is declared
capable (:class:`JudgeConfig`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import os
import re
import sys
import threading
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from deepeval.models import DeepEvalBaseLLM
from pydantic import BaseModel, ValidationError

SchemaT = TypeVar("SchemaT", bound=BaseModel)

#: Bounds added to the schema given to the decoder (not to the pydantic validation).
DEFAULT_MAX_STRING_CHARS = 160
DEFAULT_MAX_ITEMS = 4
_SCORE_RANGE_RE = re.compile(
    r"score\W[^\n]{0,80}?between\s+(-?\d+(?:\.\d+)?)\s+and\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE
)


class JudgeError(RuntimeError):
    """A judge cannot be built (bad configuration) or cannot answer."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeConfig:
    """Which judge runs the judge metrics, and whether its scores may gate promotion.

    Environment (``from_env``): ``LLMOPS_JUDGE`` = ``none`` | ``local`` | ``openai``;
    ``LLMOPS_JUDGE_CAPABLE`` = ``true`` to let judge metrics gate; for ``openai``:
    ``LLMOPS_JUDGE_BASE_URL``, ``LLMOPS_JUDGE_MODEL`` and ``LLMOPS_JUDGE_API_KEY_ENV`` (the
    *name* of the variable holding the key, default ``OPENAI_API_KEY``: the key itself is read
    at call time and never stored in settings, logs or MLflow).
    """

    kind: Literal["none", "local", "openai"] = "none"
    capable: bool = False
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 192

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JudgeConfig:
        env = os.environ if environ is None else environ
        kind = env.get("LLMOPS_JUDGE", "none").strip().lower() or "none"
        if kind not in ("none", "local", "openai"):
            raise JudgeError(f"LLMOPS_JUDGE={kind!r}: expected none, local or openai")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            capable=env.get("LLMOPS_JUDGE_CAPABLE", "false").strip().lower()
            in ("1", "true", "yes"),
            base_url=env.get("LLMOPS_JUDGE_BASE_URL") or None,
            model=env.get("LLMOPS_JUDGE_MODEL") or None,
            api_key_env=env.get("LLMOPS_JUDGE_API_KEY_ENV", "OPENAI_API_KEY"),
            max_new_tokens=int(env.get("LLMOPS_JUDGE_MAX_NEW_TOKENS", "192")),
        )


class ModelHolder(Protocol):
    """What :func:`build_judge` needs from a loaded local generator
    (``rag.llm.LocalTransformersGenerator`` fits): the model and its tokenizer."""

    @property
    def model(self) -> Any: ...

    @property
    def tokenizer(self) -> Any: ...


def build_judge(
    config: JudgeConfig, *, generator: ModelHolder | None = None
) -> DeepEvalBaseLLM | None:
    """The judge ``config`` names; ``local`` reuses ``generator``'s already-loaded model."""
    if config.kind == "none":
        return None
    if config.kind == "local":
        if generator is None:
            raise JudgeError("LLMOPS_JUDGE=local needs the loaded generator (model + tokenizer)")
        return LocalJudge.from_generator(generator, max_new_tokens=config.max_new_tokens)
    if not config.base_url or not config.model:
        raise JudgeError(
            "LLMOPS_JUDGE=openai needs LLMOPS_JUDGE_BASE_URL and LLMOPS_JUDGE_MODEL to be set"
        )
    return OpenAICompatibleJudge(
        base_url=config.base_url, model=config.model, api_key_env=config.api_key_env
    )


# --------------------------------------------------------------------------------------------
# Schema helpers (pure: unit-tested without a model)
# --------------------------------------------------------------------------------------------


def bounded_json_schema(
    schema: type[BaseModel],
    *,
    max_string_chars: int = DEFAULT_MAX_STRING_CHARS,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> dict[str, Any]:
    """The schema's JSON schema with length bounds on every string and array.

    Why: a decoder constrained to an unbounded schema can keep a string open until the token
    budget runs out, and the JSON never closes. Bounds that fit the budget guarantee it does.
    Enumerations (verdicts) are already bounded and left as they are.
    """
    out = copy.deepcopy(schema.model_json_schema())

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node and "const" not in node:
                node["maxLength"] = min(
                    int(node.get("maxLength", max_string_chars)), max_string_chars
                )
            if node.get("type") == "array":
                node["maxItems"] = min(int(node.get("maxItems", max_items)), max_items)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(out)
    return out


def parse_score_range(prompt: str) -> tuple[float, float] | None:
    """The score range a judge prompt asks for ("score": an integer between 0 and 10)."""
    match = _SCORE_RANGE_RE.search(prompt)
    if not match:
        return None
    low, high = float(match.group(1)), float(match.group(2))
    return (low, high) if low <= high else (high, low)


def extract_json_object(text: str) -> tuple[Any, bool]:
    """The first JSON object in ``text`` and whether it had to be repaired.

    Repair closes what a cut-off generation left open (a string, arrays, objects) after
    dropping a dangling key, comma or half-written literal, so a budget-truncated answer still
    yields its complete fields.
    """
    start = text.find("{")
    if start < 0:
        return {}, True
    body = text[start:]
    end = _balanced_end(body)
    if end is not None:
        try:
            return json.loads(body[:end]), False
        except json.JSONDecodeError:
            pass
    try:
        return json.loads(_close_json(body)), True
    except json.JSONDecodeError:
        return {}, True


def _balanced_end(text: str) -> int | None:
    """Index just past the top-level object that starts ``text``, or None if it never closes."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _close_json(text: str) -> str:
    """Close a cut-off JSON object: the longest prefix that parses once its open string,
    arrays and objects are closed (so a dangling key, comma or half literal is dropped)."""
    for end in range(len(text), 0, -1):
        candidate = _close_prefix(text[:end])
        try:
            json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return candidate
    return "{}"


def _close_prefix(text: str) -> str:
    stack: list[str] = []
    in_string, escaped = False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    if escaped:
        text = text[:-1]
    if in_string:
        text += '"'
    return text + "".join(reversed(stack))


def clamp_scores(data: Any, score_range: tuple[float, float] | None) -> Any:
    """Clamp every numeric ``*score*`` field (any depth) into ``score_range``; NaN → minimum."""
    if score_range is None:
        return data
    low, high = score_range
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if (
                "score" in key.lower()
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                value = low if math.isnan(float(value)) else min(max(value, low), high)
            out[key] = clamp_scores(value, score_range)
        return out
    if isinstance(data, list):
        return [clamp_scores(item, score_range) for item in data]
    return data


def _placeholder(annotation: Any) -> Any:
    """A type-correct stand-in for a missing or invalid required field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args:
            return None
        return _placeholder(args[0])
    if origin is Literal:
        return args[-1] if len(args) > 2 else args[0]
    if origin in (list, tuple, set) or annotation in (list, tuple, set):
        return []
    if origin is dict or annotation is dict:
        return {}
    if annotation is str:
        return ""
    if annotation is bool:
        return False
    if annotation in (int, float):
        return 0
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {
            name: _placeholder(field.annotation)
            for name, field in annotation.model_fields.items()
            if field.is_required()
        }
    return None


def coerce_to_schema(
    text: str, schema: type[SchemaT], *, score_range: tuple[float, float] | None = None
) -> tuple[SchemaT, bool]:
    """Parse ``text`` into ``schema``: extract, clamp, validate; repair what fails.

    Returns the instance and whether anything had to be repaired (truncated JSON, a missing or
    invalid field replaced by a neutral placeholder). Always returns an instance: a judge call
    that cannot be read is then visible as a placeholder reason, not as a crashed evaluation.
    """
    data, repaired = extract_json_object(text)
    if not isinstance(data, dict):
        data, repaired = {}, True
    data = clamp_scores(data, score_range)
    try:
        return schema.model_validate(data), repaired
    except ValidationError as exc:
        bad = {str(err["loc"][0]) for err in exc.errors() if err.get("loc")}
    fixed = {k: v for k, v in data.items() if k in schema.model_fields and k not in bad}
    for name, field in schema.model_fields.items():
        if name not in fixed and field.is_required():
            fixed[name] = _placeholder(field.annotation)
    if score_range is not None:
        fixed = clamp_scores({**fixed}, score_range)
        for name, field in schema.model_fields.items():
            if "score" in name.lower() and field.annotation in (int, float) and name in bad:
                fixed[name] = score_range[0]
    try:
        return schema.model_validate(fixed), True
    except ValidationError:
        return schema.model_construct(**fixed), True


# --------------------------------------------------------------------------------------------
# Local transformers judge
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


_TOKENIZER_DATA: dict[int, tuple[Any, Any]] = {}
_TOKENIZER_DATA_LOCK = threading.Lock()


def _tokenizer_data(tokenizer: Any, eos_ids: list[int]) -> Any:
    """lm-format-enforcer's per-tokenizer tables (a pass over the vocabulary), built once."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    with _TOKENIZER_DATA_LOCK:
        cached = _TOKENIZER_DATA.get(id(tokenizer))
        if cached is not None and cached[0] is tokenizer:
            return cached[1]
        integration = _lmfe_transformers()
        vocab_size = len(tokenizer)
        regular = integration._build_regular_tokens_list(tokenizer, vocab_size)
        decode = lambda ids: tokenizer.decode(ids).rstrip("\ufffd")  # noqa: E731
        # The GGUF tokenizer names <|im_start|> as eos: pass the real end-of-turn ids.
        data = TokenEnforcerTokenizerData(regular, decode, eos_ids, False, vocab_size)
        _TOKENIZER_DATA[id(tokenizer)] = (tokenizer, data)
        return data


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    try:  # the rag helper's rule (generation config + chat end-of-turn tokens)
        from llmops_dagster.rag.llm import stop_token_ids

        return stop_token_ids(model, tokenizer)
    except ImportError:  # pragma: no cover - rag package is part of the same install
        eos = model.generation_config.eos_token_id
        return list(eos) if isinstance(eos, list) else [eos]


class LocalJudge(DeepEvalBaseLLM):
    """A DeepEval judge over an already-loaded local causal LM (the generator is not loaded
    twice). With a ``schema`` the output is constrained to that schema's JSON and returned as an
    instance of it; without one, plain greedy text.

    ``generate`` calls are serialised by ``lock`` (pass the generator's lock when the same model
    also serves answers): a torch model is not safe for concurrent ``generate`` calls, and on a
    CPU two at once are slower than one after the other anyway.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        max_new_tokens: int = 192,
        repetition_penalty: float = 1.3,
        max_string_chars: int = DEFAULT_MAX_STRING_CHARS,
        max_items: int = DEFAULT_MAX_ITEMS,
        score_range: tuple[float, float] | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        self._hf_model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.max_string_chars = max_string_chars
        self.max_items = max_items
        #: Used when the prompt names no range; None = clamp only ranges the prompt states.
        self.score_range = score_range
        self.lock = lock or threading.Lock()
        self.stop_ids = _stop_ids(model, tokenizer)
        #: Calls whose output needed repair (truncation, invalid field): a judge-quality signal.
        self.repaired_calls = 0
        self.calls = 0
        model_name = name or getattr(getattr(model, "config", None), "name_or_path", "") or "local"
        super().__init__(model=f"local:{model_name}")

    @classmethod
    def from_generator(cls, generator: ModelHolder, **kwargs: Any) -> LocalJudge:
        """Judge with the generator's model; shares its lock when it exposes one."""
        loaded = getattr(generator, "_loaded", None)
        lock = kwargs.pop("lock", None) or getattr(generator, "lock", None)
        lock = lock or getattr(loaded, "lock", None)
        name = kwargs.pop("name", None) or getattr(generator, "model_id", None)
        return cls(generator.model, generator.tokenizer, name=name, lock=lock, **kwargs)

    # DeepEvalBaseLLM interface ----------------------------------------------------------------
    def load_model(self, *args: Any, **kwargs: Any) -> Any:
        return self._hf_model

    def get_model_name(self, *args: Any, **kwargs: Any) -> str:
        return self.name

    def generate(self, prompt: Any, schema: type[SchemaT] | None = None, **kwargs: Any) -> Any:
        text = self._complete(str(prompt), schema)
        if schema is None:
            return text
        score_range = parse_score_range(str(prompt)) or self.score_range
        instance, repaired = coerce_to_schema(text, schema, score_range=score_range)
        self.calls += 1
        self.repaired_calls += int(repaired)
        return instance

    async def a_generate(
        self, prompt: Any, schema: type[SchemaT] | None = None, **kwargs: Any
    ) -> Any:
        # The model runs in a worker thread so the event loop (other metrics) keeps going.
        return await asyncio.to_thread(self.generate, prompt, schema)

    # ------------------------------------------------------------------------------------------
    def _render(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def _complete(self, prompt: str, schema: type[BaseModel] | None) -> str:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tokenizer, model = self.tokenizer, self._hf_model
        enc = tokenizer(self._render(prompt), return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        prompt_len = enc["input_ids"].shape[1]
        extra: dict[str, Any] = {}
        if schema is not None:
            from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser

            integration = _lmfe_transformers()
            parser = JsonSchemaParser(
                bounded_json_schema(
                    schema, max_string_chars=self.max_string_chars, max_items=self.max_items
                ),
                config=CharacterLevelParserConfig(
                    max_consecutive_whitespaces=2, force_json_field_order=True
                ),
            )
            extra["prefix_allowed_tokens_fn"] = (
                integration.build_transformers_prefix_allowed_tokens_fn(
                    _tokenizer_data(tokenizer, self.stop_ids), parser
                )
            )

            class _JsonComplete(StoppingCriteria):
                """Stop once the top-level JSON object has closed (no trailing tokens)."""

                def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                    done = [
                        _balanced_end(
                            tokenizer.decode(row[prompt_len:], skip_special_tokens=True).lstrip()
                        )
                        is not None
                        for row in input_ids
                    ]
                    return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

            extra["stopping_criteria"] = StoppingCriteriaList([_JsonComplete()])
        with self.lock, torch.inference_mode():
            output = model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                repetition_penalty=self.repetition_penalty,
                eos_token_id=self.stop_ids,
                pad_token_id=tokenizer.pad_token_id
                if tokenizer.pad_token_id is not None
                else self.stop_ids[0],
                **extra,
            )
        return tokenizer.decode(output[0][prompt_len:], skip_special_tokens=True).strip()


# --------------------------------------------------------------------------------------------
# OpenAI-compatible judge
# --------------------------------------------------------------------------------------------


class OpenAICompatibleJudge(DeepEvalBaseLLM):
    """A judge behind any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp, hosted).

    With a ``schema`` it asks for ``response_format`` JSON schema output (``json_mode`` =
    ``json_object`` or ``none`` for servers without it) and still validates and clamps locally:
    a server that ignores ``response_format`` must not crash an evaluation.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        json_mode: Literal["json_schema", "json_object", "none"] = "json_schema",
        timeout_s: float = 120.0,
        temperature: float = 0.0,
        transport: Any = None,
        async_transport: Any = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise JudgeError(f"LLMOPS_JUDGE_BASE_URL={base_url!r} must start with http(s)://")
        self.base_url = base_url.rstrip("/")
        self.model_name_remote = model
        self.api_key_env = api_key_env
        self.json_mode = json_mode
        self.timeout_s = timeout_s
        self.temperature = temperature
        #: ``httpx`` transports (tests pass ``httpx.MockTransport``); None = real network.
        self.transport = transport
        self.async_transport = async_transport
        super().__init__(model=f"openai-compatible:{model}")

    def load_model(self, *args: Any, **kwargs: Any) -> Any:
        return self.model_name_remote

    def get_model_name(self, *args: Any, **kwargs: Any) -> str:
        return self.name

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _body(self, prompt: str, schema: type[BaseModel] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name_remote,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
        }
        if schema is not None and self.json_mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
            }
        elif schema is not None and self.json_mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _parse(self, payload: Mapping[str, Any], prompt: str, schema: type[SchemaT] | None) -> Any:
        try:
            text = payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"judge endpoint {self.base_url} returned no choices") from exc
        if schema is None:
            return text
        return coerce_to_schema(text, schema, score_range=parse_score_range(prompt))[0]

    def generate(self, prompt: Any, schema: type[SchemaT] | None = None, **kwargs: Any) -> Any:
        import httpx

        with httpx.Client(
            base_url=self.base_url, timeout=self.timeout_s, transport=self.transport
        ) as client:
            try:
                response = client.post(
                    "/chat/completions",
                    json=self._body(str(prompt), schema),
                    headers=self._headers(),
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise JudgeError(f"judge endpoint {self.base_url} failed: {exc}") from exc
            return self._parse(response.json(), str(prompt), schema)

    async def a_generate(
        self, prompt: Any, schema: type[SchemaT] | None = None, **kwargs: Any
    ) -> Any:
        import httpx

        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, transport=self.async_transport
        ) as client:
            try:
                response = await client.post(
                    "/chat/completions",
                    json=self._body(str(prompt), schema),
                    headers=self._headers(),
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise JudgeError(f"judge endpoint {self.base_url} failed: {exc}") from exc
            return self._parse(response.json(), str(prompt), schema)
