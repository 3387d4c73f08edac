"""A secured node (x-pack security, TLS on HTTP) and the project connecting to it with basic
auth and a CA certificate; TLS verification is on by default."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from llmops_dagster.config import ElasticsearchSettings, Settings
from llmops_dagster.embed.model import load_embedder
from llmops_dagster.search.aliases import rebuild
from llmops_dagster.search.client import ElasticsearchUnavailable, check_cluster, make_client
from llmops_dagster.search.mapping import IndexSpec, build_index_body
from llmops_dagster.search.retriever import HybridRetriever
from llmops_dagster.services.elasticsearch_local import run_node_tool, start_node, stop_node
from llmops_dagster.services.local import local_node
from tests.conftest import TEST_ES_PORT, THROWAWAY_STOP_S
from tests.support.ports import free_node_port

pytestmark = pytest.mark.integration

#: The node's HTTP port: LLMOPS_SECURED_ES_PORT, else a free one (several test sessions at once
#: each get their own); its folder is named after the session's node port.
PORT = int(os.environ.get("LLMOPS_SECURED_ES_PORT", "0"))
USER, PASSWORD = "llmops_test", "pw-" + uuid.uuid4().hex[:16]


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(obj) -> bytes:
    if isinstance(obj, rsa.RSAPrivateKey):
        return obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return obj.public_bytes(serialization.Encoding.PEM)


def _write_certs(folder: Path) -> Path:
    """A throwaway CA and a node certificate for 127.0.0.1/localhost."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, node_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmops test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    node = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (folder / "ca.crt").write_bytes(_pem(ca))
    (folder / "node.crt").write_bytes(_pem(node))
    (folder / "node.key").write_bytes(_pem(node_key))
    return folder / "ca.crt"


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[str, Path]]:
    base = Settings()
    node = replace(
        local_node(
            base,
            node_dir=base.home / "elasticsearch" / f"secured-node-{TEST_ES_PORT}",
            port=PORT or free_node_port(),
        ),
        extra_settings=(
            ("xpack.security.enabled", True),
            ("xpack.security.http.ssl.enabled", True),
            ("xpack.security.http.ssl.certificate", "certs/node.crt"),
            ("xpack.security.http.ssl.key", "certs/node.key"),
            ("xpack.security.http.ssl.certificate_authorities", ["certs/ca.crt"]),
        ),
    )
    ca = _write_certs(node.node_dir / "config" / "certs")
    run_node_tool(node, "elasticsearch-users", "userdel", USER)  # idempotent re-runs
    added = run_node_tool(
        node, "elasticsearch-users", "useradd", USER, "-p", PASSWORD, "-r", "superuser"
    )
    assert added.returncode == 0, added.stdout + added.stderr
    start_node(node)
    # The readiness probe has no credentials, so a secured node counts as up once it answers
    # 401 — while its first shards may still be initializing (health red). Wait as the test
    # user until the cluster is usable, so the tests see the node, not its start-up.
    spec = _settings(node.url, ELASTICSEARCH_USERNAME=USER, ELASTICSEARCH_PASSWORD=PASSWORD,
                     ELASTICSEARCH_CA_CERTS=str(ca)).cluster_spec()  # fmt: skip
    health = make_client(spec, request_timeout=120).cluster.health(
        wait_for_status="yellow", timeout="90s"
    )
    assert not health["timed_out"], f"the secured node stayed {health['status']}: {dict(health)}"
    yield node.url, ca
    stop_node(node, timeout=THROWAWAY_STOP_S)


def _settings(url: str, **env: str) -> Settings:
    return Settings(elasticsearch=ElasticsearchSettings(ELASTICSEARCH_URL=url, **env))


def test_tls_verification_is_on_and_credentials_are_required(secured) -> None:
    url, ca = secured
    assert url.startswith("https://")
    ok = _settings(url, ELASTICSEARCH_USERNAME=USER, ELASTICSEARCH_PASSWORD=PASSWORD,
                   ELASTICSEARCH_CA_CERTS=str(ca))  # fmt: skip
    assert check_cluster(make_client(ok.cluster_spec()), ok.cluster_spec()).status in {
        "green",
        "yellow",
    }

    no_ca = _settings(url, ELASTICSEARCH_USERNAME=USER, ELASTICSEARCH_PASSWORD=PASSWORD)
    with pytest.raises(ElasticsearchUnavailable, match="ELASTICSEARCH_URL"):
        check_cluster(make_client(no_ca.cluster_spec(), request_timeout=5), no_ca.cluster_spec())

    wrong = _settings(url, ELASTICSEARCH_USERNAME=USER, ELASTICSEARCH_PASSWORD="wrong",
                      ELASTICSEARCH_CA_CERTS=str(ca))  # fmt: skip
    with pytest.raises(ElasticsearchUnavailable, match="refused the credentials"):
        check_cluster(make_client(wrong.cluster_spec()), wrong.cluster_spec())


def test_basic_auth_over_tls_indexes_and_searches(secured) -> None:
    # API keys live in the .security index, whose mapping needs analysis-common, which this
    # minimal distribution lacks: here the pipeline's own path is exercised with basic auth.
    url, ca = secured
    settings = _settings(url, ELASTICSEARCH_USERNAME=USER, ELASTICSEARCH_PASSWORD=PASSWORD,
                         ELASTICSEARCH_CA_CERTS=str(ca))  # fmt: skip
    client = make_client(settings.cluster_spec())
    check_cluster(client, settings.cluster_spec())

    embedder = load_embedder(Settings().models.embedding_model)
    texts = ["swap the battery at the depot", "expense reports are due monthly"]
    docs = [
        {"chunk_id": f"s{i}", "doc_id": f"fs:s{i}.md", "text": t, "embedding": v, "position": 0}
        for i, (t, v) in enumerate(zip(texts, embedder.encode(texts), strict=True))
    ]
    alias = f"secured-{uuid.uuid4().hex[:8]}"
    body = build_index_body(IndexSpec(dims=embedder.dims, model_id=embedder.model_id))
    report = rebuild(client, alias, docs, expected_count=2, index_body=body)
    hits = HybridRetriever(client, alias, embedder).search("battery", mode="hybrid_rrf", k=1)
    assert hits[0].chunk_id == "s0"
    client.indices.delete(index=report.index)


def test_api_key_authenticates_and_revoked_key_is_refused(secured) -> None:
    # API keys live in the .security index, whose `email` analyzer needs uax_url_email,
    # pattern_capture and unique: the local-node plugin (services/es_plugin.py) provides them,
    # so the node creates that index and API keys work.
    url, ca = secured
    admin = _settings(url, ELASTICSEARCH_USERNAME=USER, ELASTICSEARCH_PASSWORD=PASSWORD,
                      ELASTICSEARCH_CA_CERTS=str(ca))  # fmt: skip
    admin_client = make_client(admin.cluster_spec())
    name = f"llmops-test-{uuid.uuid4().hex[:8]}"
    key = admin_client.security.create_api_key(name=name, expiration="1h")

    with_key = _settings(url, ELASTICSEARCH_API_KEY=key["encoded"], ELASTICSEARCH_CA_CERTS=str(ca))
    client = make_client(with_key.cluster_spec())
    assert check_cluster(client, with_key.cluster_spec()).status in {"green", "yellow"}
    who = client.security.authenticate()
    assert (who["username"], who["authentication_type"]) == (USER, "api_key")
    assert (who["api_key"]["id"], who["api_key"]["name"]) == (key["id"], name)

    invalidated = admin_client.security.invalidate_api_key(ids=[key["id"]])
    assert invalidated["invalidated_api_keys"] == [key["id"]]
    with pytest.raises(ElasticsearchUnavailable, match="refused the credentials"):
        check_cluster(make_client(with_key.cluster_spec()), with_key.cluster_spec())
