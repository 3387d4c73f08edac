"""The local node with the plugin built at set-up (services/es_plugin.py): it answers ``GET /``
and ``HEAD /`` like a full node and offers English analysis, so the project's mapping uses the
``english`` analyzer and a third-party client that calls ``info()`` on start works unpatched.

These check the local node this project runs; with ELASTICSEARCH_URL set they are skipped with
that reason (an external cluster brings its own modules).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elasticsearch import BadRequestError

from llmops_dagster.config import Settings
from llmops_dagster.search.mapping import IndexSpec, build_index_body, detect_text_analyzer
from llmops_dagster.services.elasticsearch_local import distribution_home
from llmops_dagster.services.es_plugin import (
    PLUGIN_NAME,
    default_cache_dir,
    distribution_version,
    ensure_plugin,
    installed_plugin_dir,
    plugin_version,
    read_descriptor,
    source_hash,
)

pytestmark = pytest.mark.integration

SENTENCE = "The runners were running quickly to the stations, and John's batteries failed."
#: Lucene's EnglishAnalyzer: possessive 's dropped, English stopwords removed, Porter stems.
ENGLISH_TOKENS = ["runner", "were", "run", "quickli", "station", "john", "batteri", "fail"]

#: Haystack 3.4.1 + elasticsearch-haystack 7.1.0 and every dependency, pinned (resolved once
#: with pip; the integration pins elasticsearch<9, and the 8.19 client talks to a 9.5 node).
HAYSTACK_PINS = (
    "aiohappyeyeballs==2.7.1", "aiohttp==3.14.5", "aiosignal==1.4.0", "annotated-types==0.8.0",
    "anyio==4.16.0", "attrs==26.1.0", "backoff==2.2.1", "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3", "distro==1.9.0", "docstring_parser==0.18.0",
    "elastic-transport==8.19.0", "elasticsearch==8.19.3", "elasticsearch-haystack==7.1.0",
    "filetype==1.2.0", "frozenlist==1.8.0", "h11==0.16.0", "haystack-ai==3.4.1",
    "httpcore==1.0.9", "httpcore2==2.16.2", "httpx==0.28.1", "httpx2==2.16.2", "idna==3.20",
    "Jinja2==3.1.6", "jiter==0.19.0", "jsonschema==4.26.0", "jsonschema-specifications==2025.9.1",
    "lazy_imports==1.2.0", "MarkupSafe==3.0.4", "more-itertools==11.2.1", "multidict==7.2.1",
    "networkx==3.6.1", "numpy==2.4.6", "openai==3.57.0", "posthog==7.91.1", "propcache==0.5.4",
    "pydantic==2.14.4", "pydantic_core==2.50.5", "python-dateutil==4.0.0", "PyYAML==6.0.4",
    "referencing==0.37.0", "requests==2.34.2", "rpds-py==2026.9.1", "sniffio==1.3.1",
    "tenacity==9.2.1", "tqdm==4.70.1", "truststore==0.10.5", "typing-inspection==0.4.5",
    "typing_extensions==4.16.0", "tzdata==2026.6", "urllib3==2.8.0", "yarl==1.25.1",
)  # fmt: skip

#: Run in the Haystack venv: the document store calls info() when it first connects, writes
#: three documents into an index whose ``content`` uses ``english``, and BM25-retrieves.
HAYSTACK_SCRIPT = """
import json, sys
from haystack import Document
from haystack_integrations.components.retrievers.elasticsearch import ElasticsearchBM25Retriever
from haystack_integrations.document_stores.elasticsearch import ElasticsearchDocumentStore

url, index = sys.argv[1], sys.argv[2]
store = ElasticsearchDocumentStore(
    hosts=url, index=index,
    custom_mapping={"properties": {"content": {"type": "text", "analyzer": "english"}}},
)
written = store.write_documents([
    Document(id="d1", content="Replace the battery of the forklift at the depot."),
    Document(id="d2", content="Expense reports are due at the end of every month."),
    Document(id="d3", content="Batteries must be charged overnight in the charging bay."),
])
retriever = ElasticsearchBM25Retriever(document_store=store, top_k=3)
found = retriever.run(query="charging batteries")["documents"]
print(json.dumps({
    "written": written,
    "count": store.count_documents(),
    "ids": [doc.id for doc in found],
    "server_version": store.client.info()["version"]["number"],
}))
"""


@pytest.fixture(scope="module")
def local(es_settings: Settings) -> Settings:
    # The session settings always carry a URL (the test node's); the environment tells.
    if Settings().uses_external_es:
        pytest.fail(
            "these tests are about the embedded node's plugin: run them without "
            "ELASTICSEARCH_URL (the session then starts the local node)",
            pytrace=False,
        )
    return es_settings


def _analyze(client, **body) -> list[str]:
    return [token["token"] for token in client.indices.analyze(**body)["tokens"]]


def test_info_answers_like_a_full_node(local: Settings, es_client) -> None:
    info = es_client.info()
    version = local.local_node.version
    assert info["version"]["number"] == version
    assert info["tagline"] == "You Know, for Search"
    assert info["name"] == "llmops-node-1"
    assert info["cluster_name"] == "llmops-local"
    state = es_client.cluster.state(metric="metadata", filter_path="metadata.cluster_uuid")
    assert info["cluster_uuid"] == state["metadata"]["cluster_uuid"]
    assert info["version"]["build_flavor"] == "default"
    assert info["version"]["build_type"] == "zip"
    assert info["version"]["build_snapshot"] is False
    # The Lucene the node runs is the one its distribution ships.
    lib = distribution_home(local.es_dist_dir, version) / "lib"
    lucene_jars = sorted(p.name for p in lib.glob("lucene-core-*"))
    assert lucene_jars == [f"lucene-core-{info['version']['lucene_version']}.jar"]
    nodes = es_client.nodes.info(metric="plugins")["nodes"]
    (node,) = nodes.values()
    plugins = {p["name"]: p["version"] for p in node["plugins"]}
    assert plugins == {PLUGIN_NAME: plugin_version(version, source_hash())}


def test_head_root_pings_without_a_body(local: Settings, es_client) -> None:
    assert es_client.ping() is True
    response = httpx.head(f"{local.es_url}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["X-elastic-product"] == "Elasticsearch"
    assert response.content == b""


def test_english_analyzer_gives_exact_stems(local: Settings, es_client) -> None:
    assert _analyze(es_client, analyzer="english", text=SENTENCE) == ENGLISH_TOKENS
    # The configurable form, with the usual settings.
    custom = {"type": "english", "stopwords": ["runners"], "stem_exclusion": ["stations"]}
    index = f"plugin-english-{uuid.uuid4().hex[:8]}"
    es_client.indices.create(
        index=index,
        settings={"analysis": {"analyzer": {"en_custom": custom}}},
        mappings={"properties": {"body": {"type": "text", "analyzer": "en_custom"}}},
    )
    try:
        tokens = _analyze(es_client, index=index, field="body", text="the runners at stations")
        # Its own stopword list replaces the English one ("the", "at" stay); "stations" is
        # excluded from stemming.
        assert tokens == ["the", "at", "stations"]
    finally:
        es_client.indices.delete(index=index)


def test_stemming_token_filters(local: Settings, es_client) -> None:
    text = "running batteries generously"
    chain = ["lowercase"]
    assert _analyze(es_client, tokenizer="standard", filter=[*chain, "porter_stem"], text=text) == [
        "run", "batteri", "gener",
    ]  # fmt: skip
    assert _analyze(es_client, tokenizer="standard", filter=[*chain, "kstem"], text=text) == [
        "running", "battery", "generous",
    ]  # fmt: skip
    porter2 = {"type": "stemmer", "language": "porter2"}
    assert _analyze(es_client, tokenizer="standard", filter=[*chain, porter2], text=text) == [
        "run", "batteri", "generous",
    ]  # fmt: skip
    minimal = {"type": "stemmer", "language": "minimal_english"}
    assert _analyze(es_client, tokenizer="standard", filter=[*chain, minimal], text=text) == [
        "running", "battery", "generously",
    ]  # fmt: skip
    with pytest.raises(BadRequestError, match=r"language \[german\] is not available"):
        _analyze(
            es_client,
            tokenizer="standard",
            filter=[{"type": "stemmer", "language": "german"}],
            text=text,
        )


def test_project_mapping_uses_english_and_bm25_stems(local: Settings, es_client) -> None:
    choice = detect_text_analyzer(es_client)
    assert choice.name == "english"
    body = build_index_body(IndexSpec(dims=4, model_id="plugin-test"), client=es_client)
    index = f"plugin-mapping-{uuid.uuid4().hex[:8]}"
    es_client.indices.create(index=index, **body)
    try:
        mapping = es_client.indices.get_mapping(index=index)[index]["mappings"]
        assert mapping["_meta"]["analyzer"] == "english"
        assert mapping["_meta"]["analyzer_reason"] == "built-in english analyzer available"
        assert mapping["properties"]["text"]["analyzer"] == "english"
        assert mapping["properties"]["title"]["analyzer"] == "english"
        docs = {"c1": "Replace the battery at the depot.", "c2": "Expense reports are monthly."}
        for chunk_id, text in docs.items():
            es_client.index(index=index, id=chunk_id, document={"chunk_id": chunk_id, "text": text})
        es_client.indices.refresh(index=index)
        hits = es_client.search(index=index, query={"match": {"text": "batteries replaced"}})
        assert [hit["_id"] for hit in hits["hits"]["hits"]] == ["c1"]
    finally:
        es_client.indices.delete(index=index)


def test_a_stale_distribution_copy_gets_the_plugin(local: Settings, tmp_path: Path) -> None:
    """The copy a root run relocates to /var/tmp may predate the plugin: the node start's
    ensure step installs it (replacing an older build), then finds it current."""
    source = distribution_home(local.es_dist_dir, local.local_node.version)
    copy = tmp_path / source.name
    # Hard links for the program files, but no link into the shared plugin folder: the stale
    # plugin below is written into fresh files.
    shutil.copytree(
        source, copy, copy_function=os.link,
        ignore=lambda folder, names: ["plugins"] if Path(folder) == source else [],
    )  # fmt: skip
    stale = installed_plugin_dir(copy)
    stale.mkdir(parents=True)
    (stale / "plugin-descriptor.properties").write_text(
        f"name={PLUGIN_NAME}\nversion=9.5.0-000000000000\nelasticsearch.version=9.4.0\n"
    )
    (stale / f"{PLUGIN_NAME}-old.jar").write_bytes(b"")

    status = ensure_plugin(copy, cache_dir=default_cache_dir(source))
    version = plugin_version(distribution_version(copy), source_hash())
    assert status.action == "installed"
    assert status.version == version
    assert read_descriptor(installed_plugin_dir(copy))["version"] == version
    assert sorted(p.name for p in installed_plugin_dir(copy).iterdir()) == [
        f"{PLUGIN_NAME}-{version}.jar",
        "plugin-descriptor.properties",
    ]
    assert sorted(p.name for p in (copy / "plugins").iterdir()) == [PLUGIN_NAME]
    assert ensure_plugin(copy, cache_dir=default_cache_dir(source)).action == "current"


@pytest.fixture(scope="module")
def haystack_python(local: Settings) -> Iterator[Path]:
    """A throw-away venv with the pinned Haystack set, cached under LLMOPS_HOME/tools by the
    hash of its pins. Installed with this venv's pip (``--python``) without resolving or
    compiling: about 45 s on a busy 2-core box, then reused."""
    digest = hashlib.sha256("\n".join(HAYSTACK_PINS).encode()).hexdigest()[:12]
    venv = local.home / "tools" / f"haystack-{digest}"
    python = venv / "bin" / "python"
    if not python.is_file():
        started = time.monotonic()
        staging = venv.with_name(f".{venv.name}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(staging)], check=True)
        pip = [sys.executable, "-m", "pip", "--python", str(staging / "bin" / "python")]
        install = subprocess.run(
            [*pip, "install", "-q", "--no-deps", "--no-compile", *HAYSTACK_PINS],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        if install.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"could not install the pinned Haystack set from PyPI:\n{install.stderr}")
        check = subprocess.run([*pip, "check"], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        staging.rename(venv)
        print(f"Haystack venv installed in {time.monotonic() - started:.1f}s")
    yield python


def test_haystack_document_store_works_unpatched(
    local: Settings, es_client, haystack_python: Path, tmp_path: Path
) -> None:
    script = tmp_path / "haystack_bm25.py"
    script.write_text(HAYSTACK_SCRIPT)
    index = f"haystack-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "HAYSTACK_TELEMETRY_ENABLED": "False"}
    try:
        run = subprocess.run(
            [str(haystack_python), str(script), local.es_url, index],
            capture_output=True, text=True, check=False, timeout=300, env=env,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result == {
            "written": 3,
            "count": 3,
            # "batteries" meets "battery" only through the english analyzer's stemming.
            "ids": ["d3", "d1"],
            "server_version": local.local_node.version,
        }
    finally:
        es_client.indices.delete(index=index, ignore_unavailable=True)
