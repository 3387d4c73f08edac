"""Loading the code location must stay cheap: no ML framework is imported at definition time.

``dagster dev``, every run worker and every sensor tick import ``llmops_dagster.definitions``;
torch/transformers/sentence-transformers/deepeval add seconds and hundreds of MB each, so they
are imported inside the assets that use them. This checks the behaviour (what is in
``sys.modules``), not a timing: ``benchmarks/throughput.py`` measures the time (p8).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmops_dagster.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

HEAVY = ("torch", "transformers", "sentence_transformers", "deepeval", "onnxruntime")


def test_definitions_import_no_ml_framework() -> None:
    code = (
        "import json, sys; import llmops_dagster.definitions as d; "
        "assert d.defs is not None; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
