"""Prompt templates in MLflow's prompt registry: the repo file is the source, MLflow the record.

Why: an evaluation, a bundle or a served answer has to name the exact prompt text it used, and
that name has to resolve later — on another machine, after the file changed. The repo's
template (:func:`llmops_dagster.rag.prompts.load_prompt`) is registered by :func:`sync_prompt`
whenever its content hash differs from the latest registered version, and loaded back by
``prompts:/<name>/<version>`` or ``prompts:/<name>@<alias>`` with
:func:`load_registered_prompt`. The loaded :class:`PromptTemplate` equals the file's (same text,
same name, same content-hash version).

Only the store-level ``MlflowClient`` prompt calls are used (``create_prompt``,
``create_prompt_version``, ``get_prompt_version``, ``get_prompt_version_by_alias``,
``search_prompt_versions``, ``set_prompt_alias``): ``MlflowClient.register_prompt`` and
``MlflowClient.load_prompt`` also consult MLflow's process-global experiment
(``MLFLOW_EXPERIMENT_NAME`` / the active experiment, through a client on the *global* tracking
URI) and tag the prompt from a background thread, which this codebase does not do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops_dagster.rag.prompts import PromptError, PromptTemplate, prompt_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Prompt version tags written by :func:`sync_prompt`.
TAG_CONTENT_HASH = "llmops.prompt_content_hash"
TAG_TEMPLATE_NAME = "llmops.prompt_template_name"

_PROMPT_URI_RE = re.compile(r"prompts:/([^/@\s]+)(?:/(\d+)|@([\w\-]+))")
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class PromptRegistryError(PromptError):
    """A prompt URI that does not resolve, or a registered prompt that is not a valid template."""


@dataclass(frozen=True)
class RegisteredPrompt:
    """One registered prompt version and the template it holds."""

    name: str
    version: int
    uri: str  # prompts:/<name>/<version>
    content_hash: str  # == template.version
    template: PromptTemplate


def prompt_uri(name: str, version: int | str) -> str:
    return f"prompts:/{name}/{int(version)}"


def parse_prompt_uri(uri: str) -> tuple[str, int | None, str | None]:
    """``prompts:/n/3`` → (n, 3, None); ``prompts:/n@champion`` → (n, None, "champion")."""
    match = _PROMPT_URI_RE.fullmatch(uri.strip())
    if not match:
        raise PromptRegistryError(
            f"prompt URI {uri!r} is not prompts:/<name>/<version> or prompts:/<name>@<alias>"
        )
    version = match.group(2)
    return match.group(1), (int(version) if version is not None else None), match.group(3)


def _where(client: MlflowClient) -> str:
    return f"the MLflow prompt registry of tracking URI {client.tracking_uri}"


def _to_registered(name: str, prompt_version_entity: Any) -> RegisteredPrompt:
    """A RegisteredPrompt from MLflow's PromptVersion; checks the text is a valid template."""
    text = prompt_version_entity.template
    version = int(prompt_version_entity.version)
    uri = prompt_uri(name, version)
    if not isinstance(text, str):
        raise PromptRegistryError(f"{uri} is a chat prompt; this project registers text templates")
    tags = dict(prompt_version_entity.tags or {})
    try:
        template = PromptTemplate.from_text(tags.get(TAG_TEMPLATE_NAME) or name, text)
    except PromptError as exc:
        raise PromptRegistryError(f"{uri} is not a valid prompt template: {exc}") from exc
    recorded = tags.get(TAG_CONTENT_HASH)
    if recorded and recorded != template.version:
        raise PromptRegistryError(
            f"{uri}: text hashes to {template.version} but the version records "
            f"{TAG_CONTENT_HASH}={recorded}"
        )
    return RegisteredPrompt(name, version, uri, template.version, template)


def _latest_version(client: MlflowClient, name: str) -> Any | None:
    """The highest registered version of ``name``; None when the prompt does not exist."""
    from mlflow.exceptions import MlflowException

    latest, token = None, None
    while True:
        try:
            page = client.search_prompt_versions(name, max_results=100, page_token=token)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise PromptRegistryError(
                f"cannot list versions of prompt {name!r} in {_where(client)}: {exc.message}"
            ) from exc
        for candidate in page:
            if latest is None or int(candidate.version) > int(latest.version):
                latest = candidate
        token = getattr(page, "token", None)
        if not token:
            return latest


def sync_prompt(
    client: MlflowClient, template: PromptTemplate, *, name: str | None = None
) -> RegisteredPrompt:
    """Register ``template`` as a new version of prompt ``name`` (default: the template's name)
    unless the latest registered version already has the same content hash; return the latest.

    Idempotent: syncing an unchanged file registers nothing. Editing the text and syncing adds
    one version; reverting to an older text adds another (history only moves forward).
    """
    from mlflow.exceptions import MlflowException

    name = name or template.name
    content_hash = prompt_version(template.text)
    latest = _latest_version(client, name)
    if latest is not None and prompt_version(latest.template) == content_hash:
        return _to_registered(name, latest)
    try:
        if latest is None:
            try:
                client.create_prompt(
                    name, description=f"llmops-dagster prompt template {template.name!r}"
                )
            except MlflowException as exc:  # created concurrently by another process
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        created = client.create_prompt_version(
            name,
            template.text,
            description=f"content hash {content_hash}",
            tags={TAG_CONTENT_HASH: content_hash, TAG_TEMPLATE_NAME: template.name},
        )
    except MlflowException as exc:
        raise PromptRegistryError(
            f"cannot register prompt {name!r} in {_where(client)}: {exc.message}"
        ) from exc
    return _to_registered(name, created)


def load_registered_prompt(client: MlflowClient, uri: str) -> RegisteredPrompt:
    """The prompt ``prompts:/<name>/<version>`` or ``prompts:/<name>@<alias>`` names; for an
    alias, ``uri`` of the result is the concrete version it pointed at."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_prompt_uri(uri)
    try:
        if alias is not None:
            found = client.get_prompt_version_by_alias(name, alias)
        else:
            found = client.get_prompt_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            raise PromptRegistryError(
                f"no prompt {uri} in {_where(client)}: {exc.message}"
            ) from exc
        raise PromptRegistryError(
            f"cannot load {uri} from {_where(client)}: {exc.message}"
        ) from exc
    if found is None:
        raise PromptRegistryError(f"no prompt {uri} in {_where(client)}")
    return _to_registered(name, found)


def require_prompt_hash(client: MlflowClient, uri: str, content_hash: str) -> RegisteredPrompt:
    """The prompt ``uri`` names, which must have ``content_hash`` (a bundle's prompt_version)."""
    found = load_registered_prompt(client, uri)
    if found.content_hash != content_hash:
        raise PromptRegistryError(
            f"{found.uri} hashes to {found.content_hash}, expected {content_hash}"
        )
    return found


def set_prompt_alias(
    client: MlflowClient, name: str, alias: str, version: int | str
) -> RegisteredPrompt:
    """Point ``prompts:/<name>@<alias>`` at ``version``; returns that version."""
    from mlflow.exceptions import MlflowException

    target = load_registered_prompt(client, prompt_uri(name, version))  # must exist
    try:
        client.set_prompt_alias(name, alias, target.version)
    except MlflowException as exc:
        raise PromptRegistryError(
            f"cannot set prompts:/{name}@{alias} → {target.version} in {_where(client)}: "
            f"{exc.message}"
        ) from exc
    return target
