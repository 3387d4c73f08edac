"""Every `llmops-dagster ...` command the README and docs/ quote exists in the CLI, with the
options they show: a renamed command or option fails here instead of in a reader's shell."""

from __future__ import annotations

import re

import click
import pytest

from llmops_dagster.cli import main
from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
#: What follows the program name on the same line, up to a backtick, a comment or the end.
INVOCATION = re.compile(r"llmops-dagster((?:[ \t]+[^\s`#]+)*)")
WORD = re.compile(r"^[a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*$")


def _options(command: click.Command) -> set[str]:
    return {name for param in command.params for name in param.opts + param.secondary_opts}


def check_invocation(tokens: list[str]) -> list[str]:
    """What is wrong with ``llmops-dagster <tokens>`` (empty: nothing)."""
    if not tokens:
        return []
    words = [token.rstrip(").,;:\"'/]") for token in tokens]  # prose, markdown, mermaid
    if not WORD.match(words[0]):
        return [f"`{words[0]}` is not a command name"]
    commands: list[click.Command] = []
    problems = []
    for name in words[0].split("|"):
        command = main.commands.get(name)
        if command is None:
            problems.append(f"no command `{name}`")
        elif isinstance(command, click.Group):
            sub = words[1] if len(words) > 1 and WORD.match(words[1]) else None
            if sub is None:
                commands.append(command)
            for sub_name in (sub or "").split("|") if sub else []:
                if sub_name in command.commands:
                    commands.append(command.commands[sub_name])
                else:
                    problems.append(f"no command `{name} {sub_name}`")
        else:
            commands.append(command)
    for word in words[1:]:
        option = word.split("=", 1)[0].strip("[]")
        known = any(option in _options(command) for command in commands)
        if option.startswith("--") and commands and not known:
            problems.append(f"no option `{option}` on `{' '.join(words[:2])}`")
    return problems


def quoted_invocations() -> list[tuple[str, str, list[str]]]:
    """(page, line, tokens after the program name) for every quoted invocation."""
    found = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            for match in INVOCATION.finditer(line):
                found.append((page.name, line.strip(), match.group(1).split()))
    return found


def test_every_quoted_command_and_option_exists() -> None:
    invocations = [(page, line, tokens) for page, line, tokens in quoted_invocations() if tokens]
    assert len(invocations) >= 10, "the README's everyday commands alone quote more"
    problems = [
        f"{page}: {line}\n    {problem}"
        for page, line, tokens in invocations
        for problem in check_invocation(tokens)
    ]
    assert not problems, "\n".join(problems)


def test_a_misspelt_command_or_option_is_reported() -> None:
    assert check_invocation(["services", "up|down|status"]) == []
    assert check_invocation(["services", "up", "--nodes", "3"]) == []
    assert check_invocation(["services", "start"]) == ["no command `services start`"]
    assert check_invocation(["bundle", "approve", "<version>", "--by", "<name>"]) == []
    assert check_invocation(["bundle", "approve", "3", "--approver", "me"]) == [
        "no option `--approver` on `bundle approve`"
    ]
    assert check_invocation(["reindex", "--full"]) == ["no command `reindex`"]
    assert check_invocation(["keys", "add|list|revoke", "NAME", "--groups", "hr"]) == []
