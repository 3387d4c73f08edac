"""docs/configuration.md is the code's configuration, and the docs name only real settings.

The settings reference, the process defaults and the per-run knobs are generated from the code
(``scripts/config_reference.py``, like the asset graph); every environment variable the README
or a page under docs/ names must be a setting, a process default, or one of the few documented
exceptions below."""

from __future__ import annotations

import re
import runpy
from types import SimpleNamespace

import pytest

from llmops_dagster.config import OFFLINE_ENV_DEFAULTS, PROJECT_ROOT, SERVER_ENV_DEFAULTS

pytestmark = pytest.mark.unit

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
#: Variables of this project's families the docs may name although no setting reads them.
NOT_SETTINGS = {
    "LLMOPS_TEST_ES_PORT": "the test session's Elasticsearch port (tests/conftest.py)",
}
VARIABLE = re.compile(r"\b(?:LLMOPS|ELASTICSEARCH|MLFLOW|DAGSTER)_[A-Z0-9_]*[A-Z0-9]\b")


def _script() -> SimpleNamespace:
    """scripts/config_reference.py's functions and constants (its command line is not run)."""
    return SimpleNamespace(**runpy.run_path(str(PROJECT_ROOT / "scripts" / "config_reference.py")))


def test_configuration_page_matches_the_code() -> None:
    module = _script()
    page = module.PAGE.read_text()
    for (begin, end), content in module.generated().items():
        assert module.block(page, begin, end) == content, (
            f"docs/configuration.md is stale between {begin} and {end}: run "
            ".venv/bin/python scripts/config_reference.py --write"
        )


def test_the_reference_lists_every_setting_with_a_description() -> None:
    module = _script()
    table = module.settings_table()
    fields = module.settings_fields()
    assert len(fields) == table.count("\n| `")  # one row per field
    for *_, field in fields:
        names = module.env_names(field)
        assert names, f"a settings field without an environment variable: {field}"
        row = next(line for line in table.splitlines() if line.startswith(f"| `{names[0]}`"))
        assert not row.endswith("|  |"), f"{names[0]} has no description: give its field one"


def test_fallback_descriptions_only_fill_settings_that_have_none() -> None:
    module = _script()
    described = {
        name: bool(field.description)
        for *_, field in module.settings_fields()
        for name in module.env_names(field)
    }
    for name in module.FALLBACK_DESCRIPTIONS:
        assert name in described, f"FALLBACK_DESCRIPTIONS names {name}, which no setting reads"
        assert not described[name], (
            f"{name}'s field now has its own description: delete its FALLBACK_DESCRIPTIONS entry"
        )


def test_every_variable_the_docs_name_is_a_setting_or_documented() -> None:
    module = _script()
    known = module.setting_env_names() | set(OFFLINE_ENV_DEFAULTS) | set(SERVER_ENV_DEFAULTS)
    assert {"LLMOPS_HOME", "ELASTICSEARCH_URL", "MLFLOW_TRACKING_URI"} <= known
    unknown = sorted(
        f"{page.relative_to(PROJECT_ROOT)}: {name}"
        for page in PAGES
        for name in set(VARIABLE.findall(page.read_text()))
        if name not in known and name not in NOT_SETTINGS
    )
    assert not unknown, (
        "variables that no setting reads (a typo, a removed setting, or add it to NOT_SETTINGS "
        "with the reason):\n" + "\n".join(unknown)
    )
