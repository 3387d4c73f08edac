"""The tests the documentation names as proof exist: the README's guarantees tables and the
reliability table of docs/operations.md name each test by its path (and function), and a
renamed or deleted test must not leave a guarantee that nothing proves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit

#: Page → the section whose tables name their proofs in the last column.
PROOF_SECTIONS = {
    "README.md": "## Guarantees, and the tests that prove them",
    "docs/operations.md": "## Reliability",
}


def _section(text: str, heading: str) -> str:
    assert heading in text, f"section {heading!r} is missing"
    body = text.split(heading, 1)[1]
    return re.split(r"\n## ", body, maxsplit=1)[0]


def proof_rows(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """(row, [(test file, test function or None)]) for each table row of the page's section.

    A reference is `tests/.../test_x.py`, `tests/.../test_x.py::test_name`, or `::test_name`
    (another test of the file named just before it in the same cell)."""
    text = (PROJECT_ROOT / page).read_text()
    rows = []
    for line in _section(text, PROOF_SECTIONS[page]).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set(cells[0]) <= {"-"} or cells[-1] in {"proven by"}:
            continue
        refs: list[tuple[str, str | None]] = []
        current = None
        for token in re.findall(r"`([^`]+)`", cells[-1]):
            path, _, test = token.partition("::")
            current = path or current
            assert current, f"{page}: `{token}` names a test of no file: {line}"
            refs.append((current, test or None))
        rows.append((cells[0], refs))
    return rows


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


@pytest.mark.parametrize("page", sorted(PROOF_SECTIONS))
def test_every_guarantee_names_a_test_that_exists(page: str) -> None:
    rows = proof_rows(page)
    assert rows, f"{page}: no table rows under {PROOF_SECTIONS[page]!r}"
    problems = []
    for row, refs in rows:
        if not refs:
            problems.append(f"{row!r}: names no test")
        for file, test in refs:
            path = PROJECT_ROOT / file
            if not file.startswith("tests/"):
                problems.append(f"{row!r}: `{file}` is not a path under tests/")
            elif not path.is_file():
                problems.append(f"{row!r}: {file} does not exist")
            elif test is not None and test not in _test_functions(path):
                problems.append(f"{row!r}: {file} has no test {test}")
    assert not problems, f"{page}:\n" + "\n".join(problems)


def test_a_renamed_test_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a row naming a test that does not exist is found."""
    page = tmp_path / "README.md"
    page.write_text(
        "## Guarantees, and the tests that prove them\n\n| guarantee | how | proven by |\n"
        "|---|---|---|\n| g | h | `tests/unit/test_docs_guarantees.py::test_gone`, "
        "`::test_every_guarantee_names_a_test_that_exists` |\n"
    )
    monkeypatch.setattr(f"{__name__}.PROJECT_ROOT", tmp_path)
    rows = proof_rows("README.md")
    assert rows == [
        (
            "g",
            [
                ("tests/unit/test_docs_guarantees.py", "test_gone"),
                ("tests/unit/test_docs_guarantees.py",
                 "test_every_guarantee_names_a_test_that_exists"),
            ],
        )
    ]  # fmt: skip
    functions = _test_functions(Path(__file__))
    assert "test_gone" not in functions
    assert "test_every_guarantee_names_a_test_that_exists" in functions
