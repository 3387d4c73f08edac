"""Every file and folder the README and docs/ name exists, the README's layout lists every
package and module of the library, and docs/ARCHITECTURE.md maps every package: a rename or a
new package cannot leave the documentation describing a tree that is not there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
PACKAGE = PROJECT_ROOT / "llmops_dagster"
#: Where a path a page names may be relative to: the checkout, the library (ARCHITECTURE.md
#: says `serving/app.py`), the benchmarks (`results/serve.json`).
BASES = (PROJECT_ROOT, PACKAGE, PROJECT_ROOT / "benchmarks")
FILE_TYPES = (".py", ".md", ".yaml", ".yml", ".json", ".jsonl", ".sh", ".txt", ".toml")
#: Code spans that look like paths but are not files of the checkout.
NOT_A_FILE = re.compile(
    r"^(\.|/|LLMOPS_HOME|https?:|models:|prompts:|sqlite:|postgresql|s3:|gs:)|[<*…@{ ]"
)


def _prose(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def named_paths(text: str) -> set[str]:
    """Code spans that name a file or folder, without a `::test` part or an anchor."""
    found = set()
    for span in re.findall(r"`([^`\n]+)`", _prose(text)):
        path = span.split("::", 1)[0].rstrip(".,;:)")
        if NOT_A_FILE.search(path):
            continue
        if path.endswith(FILE_TYPES) or ("/" in path and re.fullmatch(r"[\w./-]+", path)):
            found.add(path)
    return found


def linked_paths(page: Path) -> set[Path]:
    """Targets of the page's relative links, images included (the screenshots are committed;
    scripts/screenshots.py retakes them after a demo run)."""
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", _prose(page.read_text()))
    return {
        (page.parent / link.split("#", 1)[0]).resolve()
        for link in links
        if not link.startswith(("http:", "https:", "#", "mailto:"))
    }


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_anchors(page: Path) -> list[str]:
    """Links `file.md#anchor` (or `#anchor`) whose target has no such heading."""
    broken = []
    for link in re.findall(r"\]\(([^)\s]*#[^)\s]+)\)", _prose(page.read_text())):
        if link.startswith(("http:", "https:")):
            continue
        file, anchor = link.split("#", 1)
        target = (page.parent / file).resolve() if file else page
        if not target.is_file():
            continue  # reported as a missing path
        headings = re.findall(r"^#+ (.+)$", _prose(target.read_text()), flags=re.M)
        if anchor not in {_slug(h) for h in headings}:
            broken.append(link)
    return broken


def _exists(path: str) -> bool:
    """A path exists relative to one of the bases; a bare file name (`setup.sh`, a module a
    table row names within its package) exists somewhere in the checkout's own folders."""
    if any((base / path).exists() for base in BASES):
        return True
    if "/" in path:
        return False
    folders = (PACKAGE, PROJECT_ROOT / "scripts", PROJECT_ROOT / "tests", PROJECT_ROOT / "assets")
    return any(next(folder.rglob(path), None) is not None for folder in folders)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = sorted(path for path in named_paths(page.read_text()) if not _exists(path))
    missing += sorted(str(p) for p in linked_paths(page) if not p.exists())
    missing += broken_anchors(page)
    assert not missing, f"{page.name} names paths or anchors that do not exist: {missing}"


def test_a_stale_path_is_found() -> None:
    text = (
        "`llmops_dagster/config.py` and `resources.py`, `serving/app.py`, "
        "`tests/unit/test_docs_paths.py::test_a_stale_path_is_found`, `LLMOPS_HOME/x.db`, "
        "`models:/m/1`, `a b/c`\n```\nnot/in/prose.py\n```"
    )
    assert named_paths(text) == {
        "llmops_dagster/config.py",
        "resources.py",
        "serving/app.py",
        "tests/unit/test_docs_paths.py",
    }
    assert _slug("Jobs, schedules, sensors") == "jobs-schedules-sensors"
    assert [p for p in sorted(named_paths(text)) if not _exists(p)] == [
        "llmops_dagster/config.py",  # a module that became the config/ package
        "resources.py",  # a module that became the resources/ package
    ]


def _layout() -> list[tuple[int, list[str]]]:
    """(indent, the paths at the start of the line) of the README's layout block: one path on
    an unindented line, one or more on an indented one (a line of the library's contents)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    rows = []
    for line in block.splitlines()[1:]:
        paths = []
        for token in line.split():
            if not token.endswith(("/", ".py")):
                break
            paths.append(token)
        indent = len(line) - len(line.lstrip())
        if paths:
            rows.append((indent, paths if indent else paths[:1]))
    return rows


def test_the_readme_layout_is_the_tree() -> None:
    rows = _layout()
    top = {path for indent, paths in rows if indent == 0 for path in paths}
    inner = {path for indent, paths in rows if indent > 0 for path in paths}
    assert "llmops_dagster/" in top
    missing = sorted(p for p in top if not (PROJECT_ROOT / p).exists())
    missing += sorted(f"llmops_dagster/{p}" for p in inner if not (PACKAGE / p).exists())
    assert not missing, f"the README's layout names what does not exist: {missing}"
    packages = {f"{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")}
    modules = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py"}
    unlisted = sorted((packages | modules) - inner)
    assert not unlisted, f"the README's layout does not list: {unlisted}"


def _package_map() -> dict[str, list[str]]:
    """ARCHITECTURE.md's package map: package or module → the module names its row gives."""
    text = (PROJECT_ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = line.strip().strip("|").split("|")
        if len(cells) == 2 and cells[0].strip().startswith("`llmops_dagster/"):
            named = re.findall(r"`([^`]+)`", cells[0])[0]
            rows[named] = re.findall(r"`(\w+\.py)`", cells[1])
    return rows


def test_the_architecture_maps_every_package() -> None:
    rows = _package_map()
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    unmapped = [p for p in packages if f"llmops_dagster/{p}/" not in rows]
    assert not unmapped, f"docs/ARCHITECTURE.md's package map lacks: {unmapped}"
    wrong = [
        f"{package}{module}"
        for package, modules in rows.items()
        if package.endswith("/")
        for module in modules
        if not (PROJECT_ROOT / package / module).is_file()
    ]
    assert not wrong, (
        f"docs/ARCHITECTURE.md's package map names modules that are not there: {wrong}"
    )
