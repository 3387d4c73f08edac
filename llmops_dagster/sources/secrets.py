"""Secrets of the sources, read the dlt way: through dlt's config providers.

A source names its secrets (``token_env: KB_API_TOKEN`` in the REST API YAML, ``url_env`` of the
SQL source, ``credentials_env`` of the destination) and dlt resolves the name like any of its
own secrets: a plain name is the environment variable of that name; a dotted key
(``sources.kb_api.token``) is ``SOURCES__KB_API__TOKEN`` in the environment or
``[sources.kb_api] token = …`` in ``.dlt/secrets.toml``; vault providers registered with dlt
join the lookup. Resolved when a run builds its source, never when the definitions load.
"""

from __future__ import annotations


def env_name(key: str) -> str:
    """The environment variable dlt's environment provider reads for ``key``."""
    return "__".join(part for part in key.split(".") if part).upper()


def read_secret(key: str) -> str | None:
    """The secret ``key`` as dlt's providers find it, or None (unset or empty)."""
    import dlt

    value = dlt.secrets.get(key)
    return str(value) if value not in (None, "") else None


def missing_secret(key: str, where: str) -> str:
    """The error message for a secret no provider has."""
    return (
        f"{where}: secret {key!r} is not set (environment variable {env_name(key)}, or "
        "`.dlt/secrets.toml`)"
    )
