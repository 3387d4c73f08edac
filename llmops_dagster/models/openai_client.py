"""One OpenAI-compatible chat client (vLLM, Ollama, llama.cpp server, hosted APIs), built on the
``openai`` package, shared by the generator and the judge.

Why one client: the generator and the OpenAI-compatible judge send the same request and need
the same errors. A failure names what to fix: an unreachable server → :class:`EndpointUnavailable`
naming the base URL; HTTP 401/403 → the API key; a body without choices → "unexpected body".

The API key comes from :class:`~llmops_dagster.models.spec.OpenAIEndpointSpec` (a resource
resolves it from an ``EnvVar``); it is never logged and never part of a ``repr``. Without a key a
placeholder is sent (local servers ignore it): the ``openai`` package would otherwise fall back
to the ``OPENAI_API_KEY`` variable of whatever process runs this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llmops_dagster.models.base import (
    EndpointUnavailable,
    Generation,
    GeneratorConfigError,
    GeneratorError,
    Messages,
    PromptInput,
    is_messages,
)
from llmops_dagster.models.spec import OpenAIEndpointSpec

if TYPE_CHECKING:
    import openai

#: Sent when the spec has no key: keyless local servers accept any bearer token.
NO_API_KEY = "EMPTY"
#: Connecting should be quick even when answers are slow: a dead server fails fast.
CONNECT_TIMEOUT_S = 5.0


class OpenAIChatClient:
    """Chat completions against ``spec.base_url``; returns :class:`Generation` objects.

    ``http_client`` / ``async_http_client`` are handed to ``openai.OpenAI`` / ``AsyncOpenAI``
    as is (tests, proxies); they are never closed here. Otherwise each call opens and closes
    its own connection pool (an async pool must not outlive the event loop that made it).
    """

    def __init__(
        self,
        spec: OpenAIEndpointSpec,
        *,
        http_client: Any = None,
        async_http_client: Any = None,
    ) -> None:
        if not spec.base_url or not spec.base_url.startswith(("http://", "https://")):
            raise GeneratorConfigError(
                f"OpenAI-compatible base URL {spec.base_url!r} must start with http:// or https://"
            )
        if not spec.model:
            raise GeneratorConfigError("an OpenAI-compatible endpoint needs a model name")
        self.spec = spec
        self.base_url = spec.base_url.rstrip("/")
        self._http_client = http_client
        self._async_http_client = async_http_client

    def _options(self) -> dict[str, Any]:
        import openai

        return {
            "base_url": self.base_url,
            "api_key": self.spec.api_key or NO_API_KEY,
            "timeout": openai.Timeout(
                self.spec.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.spec.timeout_s)
            ),
            "max_retries": max(0, self.spec.max_retries),
        }

    @contextmanager
    def _client(self) -> Iterator[openai.OpenAI]:
        import openai

        client = openai.OpenAI(**self._options(), http_client=self._http_client)
        try:
            yield client
        finally:
            if self._http_client is None:
                client.close()

    def _request(
        self,
        messages: Messages,
        max_tokens: int | None,
        temperature: float,
        response_format: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
        }
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if response_format is not None:
            request["response_format"] = dict(response_format)
        return request

    def _explain(self, exc: Exception) -> GeneratorError:
        import openai

        if isinstance(exc, openai.APIConnectionError):  # timeouts included
            return EndpointUnavailable(
                f"OpenAI-compatible endpoint {self.base_url} is unreachable "
                f"({type(exc).__name__}: {exc}). Check the base URL setting and that the "
                "server (vLLM, Ollama, ...) is running."
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            hint = ""
            if status in (401, 403):
                hint = " (check the API key: missing, wrong, or without access to this model)"
            return EndpointUnavailable(
                f"OpenAI-compatible endpoint {self.base_url} answered HTTP {status} for model "
                f"{self.spec.model!r}: {exc.response.text[:300]}{hint}"
            )
        return EndpointUnavailable(
            f"OpenAI-compatible endpoint {self.base_url} failed: {type(exc).__name__}: {exc}"
        )

    def _reply(self, completion: Any, seconds: float) -> Generation:
        try:
            choice = completion.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError, TypeError) as exc:
            raise EndpointUnavailable(
                f"OpenAI-compatible endpoint {self.base_url} returned an unexpected body "
                f"(no choices[0].message): {str(completion)[:200]}"
            ) from exc
        usage = getattr(completion, "usage", None)
        return Generation(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=seconds,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    def chat_many(
        self,
        conversations: Sequence[Messages],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        response_format: Mapping[str, Any] | None = None,
    ) -> list[Generation]:
        """One completion per conversation, up to ``spec.max_concurrency`` at a time."""
        import openai

        def one(client: openai.OpenAI, messages: Messages) -> Generation:
            request = self._request(messages, max_tokens, temperature, response_format)
            started = time.perf_counter()
            try:
                completion = client.chat.completions.create(**request)
            except openai.OpenAIError as exc:
                raise self._explain(exc) from exc
            return self._reply(completion, time.perf_counter() - started)

        with self._client() as client:
            workers = min(max(1, self.spec.max_concurrency), len(conversations))
            if workers <= 1:
                return [one(client, m) for m in conversations]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(lambda m: one(client, m), conversations))

    def served_models(self) -> list[str]:
        """The model names the endpoint lists (``GET /models``)."""
        import openai

        with self._client() as client:
            try:
                return [model.id for model in client.models.list()]
            except openai.OpenAIError as exc:
                raise self._explain(exc) from exc

    def chat(self, messages: Messages, **kwargs: Any) -> Generation:
        return self.chat_many([messages], **kwargs)[0]

    async def achat(
        self,
        messages: Messages,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        response_format: Mapping[str, Any] | None = None,
    ) -> Generation:
        import openai

        client = openai.AsyncOpenAI(**self._options(), http_client=self._async_http_client)
        request = self._request(messages, max_tokens, temperature, response_format)
        started = time.perf_counter()
        try:
            completion = await client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise self._explain(exc) from exc
        finally:
            if self._async_http_client is None:
                await client.close()
        return self._reply(completion, time.perf_counter() - started)


def require_served_model(spec: OpenAIEndpointSpec, *, http_client: Any = None) -> None:
    """The endpoint lists ``spec.model``, or :class:`GeneratorConfigError` naming what it lists:
    a bundle pinned to a model name is never answered by whatever the endpoint serves now."""
    served = OpenAIChatClient(spec, http_client=http_client).served_models()
    if spec.model not in served:
        raise GeneratorConfigError(
            f"the OpenAI-compatible endpoint {spec.base_url} does not serve {spec.model!r} "
            f"(it lists {sorted(served)[:10]}): a bundle evaluated on {spec.model!r} cannot be "
            "answered by another model; serve it there, or evaluate a new candidate bundle"
        )


def as_messages(prompt: PromptInput) -> list[dict[str, str]]:
    """Chat messages as given, or raw text as one user message."""
    if is_messages(prompt):
        return [dict(m) for m in prompt]  # type: ignore[union-attr]
    return [{"role": "user", "content": str(prompt)}]


class OpenAICompatibleGenerator:
    """The :class:`~llmops_dagster.models.base.Generator` behind an OpenAI-compatible endpoint."""

    def __init__(self, spec: OpenAIEndpointSpec, *, http_client: Any = None) -> None:
        self.client = OpenAIChatClient(spec, http_client=http_client)
        self.spec = spec

    @property
    def model_id(self) -> str:
        return f"openai-compatible:{self.spec.model}"

    def apply_chat_template(self, messages: Messages) -> str:
        """The server applies its own template; this is a readable rendering for logs."""
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)

    def generate(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> list[Generation]:
        replies = self.client.chat_many(
            [as_messages(p) for p in prompts], max_tokens=max_new_tokens, temperature=temperature
        )
        return [replace(r, text=r.text.strip()) for r in replies]
