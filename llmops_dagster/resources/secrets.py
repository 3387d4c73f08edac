"""How a secret becomes a resource field.

Under Dagster a secret is a ``dg.EnvVar``: the run worker resolves it when the run starts, and
only its *name* is written into run config and the UI. Dagster 1.13 resolves an ``EnvVar`` as a
``StringSource`` even on an optional (``str | None``) field: an unset variable fails the run's
config check ("You have attempted to fetch the environment variable … which is not set") for
every step that uses the resource, and the field's default does not apply. So a secret field
gets an ``EnvVar`` exactly when the configuration needs that secret (an OpenAI-compatible
generator, a judge endpoint, a password in the warehouse URL, …), whether or not the variable
is set where the definitions load; a setup that needs none gets ``None`` and runs without keys.

Outside Dagster nothing resolves an ``EnvVar``: ``resolve_secrets=True`` (the CLI, the server,
tools) puts the values themselves into the fields.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import SecretStr


def secret_field(
    env_name: str | None,
    *,
    needed: bool,
    resolve_secrets: bool,
    value: str | SecretStr | None,
) -> Any:
    """The resource field for the secret held by the variable ``env_name``: None when the
    configuration does not need it (or names no variable), else ``dg.EnvVar(env_name)``, or
    with ``resolve_secrets`` the ``value`` itself (as the settings or ``secret_from_env`` read
    it)."""
    if not needed or not env_name:
        return None
    if not resolve_secrets:
        return dg.EnvVar(env_name)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or None
