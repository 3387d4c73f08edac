"""docs/benchmarks.md and the README quote measurements only from benchmarks/results/*.json.

The figure tables are generated from the results files (``scripts/benchmark_tables.py``, like
the asset graph), every results file has its table, and every decimal number in the prose of
the page and of the README is one a results file holds (or on the short list below, with the
reason): a figure cannot be typed in, kept after a re-run, or rounded into something no run
measured."""

from __future__ import annotations

import json
import re
import runpy
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.unit

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
#: Decimal numbers the pages may hold that are not measurements.
NOT_MEASUREMENTS = {
    "3.11": "a Python version setup.sh accepts",
    "3.12": "a Python version setup.sh accepts",
}
#: A results file's key whose values are quoted text (corpus sentences, a model's replies):
#: the numbers in them are what the text says, not measurements, so prose cannot quote them.
QUOTED_TEXT_KEY = "samples"
#: One dot between digits: a decimal. Dotted runs with more (versions, addresses) are skipped.
DOTTED = re.compile(r"(?<![\w.])\d+(?:\.\d+)+")


def _script() -> SimpleNamespace:
    """scripts/benchmark_tables.py's functions and constants (its command line is not run)."""
    return SimpleNamespace(**runpy.run_path(str(PROJECT_ROOT / "scripts" / "benchmark_tables.py")))


def decimals(text: str) -> list[str]:
    """The decimal numbers of ``text`` outside fenced code blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [m for m in DOTTED.findall(prose) if m.count(".") == 1]


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield abs(float(value))
    elif isinstance(value, str):
        yield from (float(m) for m in decimals(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != QUOTED_TEXT_KEY:
                yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


def measured() -> set[float]:
    """Every number in every results file (also those inside strings, e.g. targets), except
    those in quoted text (:data:`QUOTED_TEXT_KEY`)."""
    return {
        number
        for path in RESULTS.glob("*.json")
        for number in _numbers(json.loads(path.read_text(encoding="utf-8")))
    }


def without_generated_blocks(text: str) -> str:
    """``text`` without the generated tables: each equals its results file's rendering
    (checked below), quoted text included."""
    return re.sub(r"<!-- results:(\S+):begin -->.*?<!-- results:\1:end -->", "", text, flags=re.S)


def test_every_results_file_has_its_generated_table() -> None:
    module = _script()
    files = sorted(path.name for path in RESULTS.glob("*.json"))
    assert files, "no results files"
    assert sorted(module.TABLES) == files, "a results file without a table (or a stale entry)"
    page = module.PAGE.read_text()
    for name, content in module.generated().items():
        begin, end = module.markers(name)
        assert begin in page and end in page, f"docs/benchmarks.md has no block for {name}"
        assert module.block(page, name) == content, (
            f"docs/benchmarks.md is stale for {name}: run "
            ".venv/bin/python scripts/benchmark_tables.py --write"
        )


@pytest.mark.parametrize("page", ["docs/benchmarks.md", "README.md"])
def test_every_figure_on_the_page_is_in_a_results_file(page: str) -> None:
    numbers = measured()
    found = decimals(without_generated_blocks((PROJECT_ROOT / page).read_text()))
    unknown = sorted(
        {n for n in found if n not in NOT_MEASUREMENTS and abs(float(n)) not in numbers}
    )
    assert not unknown, (
        f"{page} quotes figures no results file holds (write them as the file does, or add a "
        f"non-measurement to NOT_MEASUREMENTS with its reason): {unknown}"
    )


def test_a_number_in_quoted_text_is_not_a_measurement() -> None:
    data = {"seconds": 0.636, "samples": [{"sentence": "CI -0.72 to -0.33", "ok": 1.5}]}
    assert list(_numbers(data)) == [0.636]
    page = "Took 0.636 s.\n<!-- results:x.json:begin -->\n| CI -0.72 |\n<!-- results:x.json:end -->"
    assert decimals(without_generated_blocks(page)) == ["0.636"]


def test_a_figure_typed_into_the_prose_is_found() -> None:
    text = "Hybrid scored 0.7159, about 0.72.\n```\nversion 1.25 in code\n```\nnode 9.5.0 up"
    assert decimals(text) == ["0.7159", "0.72"]
    numbers = measured()
    assert 0.7159 in numbers  # retrieval_scifact.json: hybrid_rrf nDCG@10
    assert 0.72 not in numbers


def test_the_retrievers_fusion_defaults_score_the_best_of_the_dev_sweep() -> None:
    """docs/benchmarks.md says the code's RRF constant ties with the sweep's best: true only
    while the recorded sweep says so (a re-run that separates the constants fails here)."""
    from llmops_dagster.search.queries import RetrieverConfig

    config = RetrieverConfig()
    sweep = json.loads((RESULTS / "fusion_dev.json").read_text(encoding="utf-8"))
    rrf = sweep["rrf_sweep"]
    ours = [
        r for r in rrf if (r["window"], r["rank_constant"]) == (config.window, config.rank_constant)
    ]
    assert len(ours) == 1, "the code's RRF window and constant are not in the recorded sweep"
    assert ours[0]["ndcg@10"] == max(r["ndcg@10"] for r in rrf)
    linear = sweep["linear_sweep"]
    ours = [
        r
        for r in linear
        if (r["window"], r["weights"], r["normalization"])
        == (config.window, list(config.linear_weights), config.normalization)
    ]
    assert len(ours) == 1, "the code's linear fusion settings are not in the recorded sweep"
    assert ours[0]["ndcg@10"] == max(r["ndcg@10"] for r in linear)
