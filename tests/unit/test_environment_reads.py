"""One reader of the process environment: the config package. Everything else gets values
(settings → resources → explicit arguments), so a value set on a resource is the value used."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit

SCANNED = ("llmops_dagster", "assets", "jobs")
ALLOWED = PROJECT_ROOT / "llmops_dagster" / "config"
#: Names that read or write the process environment (``os.environ``, ``os.getenv``,
#: ``os.putenv``, ``from os import environ`` ...). Matched as code tokens, so a docstring or a
#: comment that mentions them is not a read.
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    """``file:line: code`` of every code token in ``path`` that names the process environment."""
    source = path.read_text(encoding="utf-8")
    return [
        f"{path.relative_to(root)}:{token.start[0]}: {token.line.strip()}"
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.NAME and token.string in ENV_NAMES
    ]


def test_the_scan_finds_every_way_of_reading_the_environment(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        '"""os.environ in a docstring is not a read."""\n'
        "import os\n"
        "from os import environ\n"
        "a = os.environ['X']\n"
        "b = os.getenv('Y')\n"
        "os.putenv('Z', '1')\n"
        "# os.environ in a comment is not a read\n"
        "c = {**os.environ}\n"
    )
    hits = environment_reads(probe, root=tmp_path)
    assert [int(hit.split(":")[1]) for hit in hits] == [3, 4, 5, 6, 8]


def test_only_the_config_package_reads_the_environment() -> None:
    files = [
        path
        for folder in SCANNED
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if ALLOWED not in path.parents
    ]
    assert len(files) > 100  # the scan really covers the package
    reads = [hit for path in files for hit in environment_reads(path)]
    assert reads == [], "read the environment in llmops_dagster/config only:\n" + "\n".join(reads)
