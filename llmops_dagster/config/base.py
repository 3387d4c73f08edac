"""What every settings group shares: read from the environment by pydantic-settings, never from
a ``.env`` file, unknown variables ignored.

Only the variable a field names (its ``validation_alias``) is read: with ``populate_by_name``
pydantic-settings would also read a variable named like the field, so ``PORT``, ``URL``,
``HOST``, ``MODEL`` or ``HOME`` — common in any shell or container — would set the local node's
port, the cluster and warehouse URLs, the server's host, the judge model or LLMOPS_HOME.
Tests derive variants with ``Settings.override`` instead of constructing groups by field name.
"""

from __future__ import annotations

from pydantic import AliasChoices
from pydantic_settings import SettingsConfigDict

GROUP_CONFIG = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=False)


def env(*names: str) -> AliasChoices:
    """The environment variable(s) a field is read from (the first one set wins)."""
    return AliasChoices(*names)
