"""``llmops-dagster ask`` chooses between a running ``serve`` and answering in-process, and says
which it used.

The service here is a real HTTP server on a free loopback port (``http.server`` in a thread)
that answers the app's routes with what the app answers: its answer body is validated against
the app's own ``AnswerResponse`` model, its errors are FastAPI's ``{"detail": ...}``. The
in-process path is a stand-in pipeline: answering for real needs Elasticsearch, MLflow and the
model (``tests/integration/test_champion_challenger.py`` runs it); under test here is only which
path answers and what is printed.
"""

from __future__ import annotations

import importlib
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmops_dagster.access import Principal
from llmops_dagster.cli import main
from llmops_dagster.rag.answer import Answer, RetrievedChunk
from llmops_dagster.serving.app import AnswerResponse
from llmops_dagster.serving.client import ANSWER_ROUTE, HEALTH_ROUTE, loopback_url

pytestmark = pytest.mark.unit

#: The module (``llmops_dagster.cli.ask`` the attribute is the command).
ask_module = importlib.import_module("llmops_dagster.cli.ask")

QUESTION = "In which year was Northwind Drones founded?"
KEY = "llmk_not-a-real-key-0123456789"
#: What the service answers: the shape POST /v1/answer returns (checked below).
ANSWER = {
    "trace_id": "tr-0123abcd",
    "answer": "Northwind Drones was founded in 2011 [fs:about.md#0].",
    "citations": [
        {
            "chunk_id": "fs:about.md#0",
            "doc_id": "fs:about.md",
            "title": "About",
            "score": 0.91234,
            "text": "Northwind Drones was founded in 2011.",
        }
    ],
    "citations_inferred": False,
    "retrieved": [
        {"chunk_id": "fs:about.md#0", "doc_id": "fs:about.md", "title": "About", "score": 0.91234},
        {
            "chunk_id": "fs:history.md#2",
            "doc_id": "fs:history.md",
            "title": "History",
            "score": 0.5,
        },
    ],
    "bundle": {
        "uri": "models:/llmops-rag-bundle/3",
        "version": "3",
        "prompt_version": "rag_answer@2",
        "model_id": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "retrieval_mode": "hybrid_rrf",
        "k": 2,
    },
    "timings_ms": {
        "queue": 0.1,
        "embed_query": 4.2,
        "retrieve": 12.4,
        "prompt": 0.3,
        "generate": 812.6,
        "total": 830.0,
    },
    "tokens": {"prompt": 312, "completion": 17},
    "cost_usd": 0.0,
    "principal": "ana",
    "guardrails": {"question_flags": [], "chunk_flags": {}, "refused": None, "redacted": {}},
    "cached": False,
    "rollout": "champion",
}
SERVICE_OUTPUT = """\
Northwind Drones was founded in 2011 [fs:about.md#0].

cited: fs:about.md#0
  fs:about.md#0 fs:about.md (0.912)
  fs:history.md#2 fs:history.md (0.500)
bundle models:/llmops-rag-bundle/3 · model SmolLM2-135M-Instruct.Q4_1.gguf · prompt \
rag_answer@2 · hybrid_rrf k=2 · retrieve 12 ms · generate 813 ms · tokens 312+17
answered by the running service at {url} (as ana, trace tr-0123abcd)
"""
IN_PROCESS_OUTPUT = """\
Founded in 2011.

cited: fs:about.md#0 (inferred)
  fs:about.md#0 fs:about.md (0.900)
bundle none (base model) · model base-model · prompt rag_answer@1 · knn k=1 · retrieve 5 ms · \
generate 7000 ms · tokens 100+5
answered in-process ({reason})
"""


def test_the_fake_service_answers_what_the_app_answers() -> None:
    assert AnswerResponse.model_validate(ANSWER).model_dump(mode="json") == ANSWER


def test_the_clients_routes_are_the_apps() -> None:
    from llmops_dagster.serving.app import create_app

    # Registering routes reads only `service.metrics`; no request is made.
    app = create_app(SimpleNamespace(metrics=None, close=lambda: None))  # type: ignore[arg-type]
    methods = {route.path: route.methods for route in app.routes if hasattr(route, "methods")}
    assert methods[HEALTH_ROUTE] == {"GET"} and methods[ANSWER_ROUTE] == {"POST"}


@dataclass
class FakeService:
    """Answers GET /healthz and POST /v1/answer as configured; records every request."""

    health: tuple[int, bytes] = (200, b'{"ok": true}')
    answer: tuple[int, dict[str, Any]] = (200, ANSWER)
    answer_headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    url: str = ""

    @property
    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _, _ in self.requests]


@contextmanager
def running(fake: FakeService) -> Iterator[FakeService]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append(("GET", self.path, dict(self.headers), None))
            status, body = fake.health if self.path == HEALTH_ROUTE else (404, b"not found")
            self._send(status, body, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append(("POST", self.path, dict(self.headers), body))
            status, payload = fake.answer if self.path == ANSWER_ROUTE else (404, {})
            self._send(status, json.dumps(payload).encode(), fake.answer_headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def nothing_listening() -> Iterator[int]:
    """A loopback port bound but not listening: connections are refused for as long as the
    test runs (no other process can take it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@dataclass
class InProcess:
    """Stands in for ``ask._pipeline``: what it was asked, and who asked."""

    built: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    principals: list[Principal] = field(default_factory=list)

    def pipeline(self, bundle_ref: str, **options: Any) -> Any:
        self.built.append((bundle_ref, options))
        return SimpleNamespace(
            answer=self.answer,
            bundle_uri=None,
            retrieval=SimpleNamespace(mode="knn", k=1),
        )

    def answer(self, question: str, *, principal: Principal) -> Answer:
        self.principals.append(principal)
        hit = RetrievedChunk("fs:about.md#0", "fs:about.md", 0.9, "About", "Founded in 2011.")
        return Answer(
            answer_id="a-1",
            question=question,
            text="Founded in 2011.",
            cited_chunk_ids=["fs:about.md#0"],
            citations_inferred=True,
            retrieved=[hit],
            prompt_name="rag_answer",
            prompt_version="1",
            model_id="base-model",
            mode="knn",
            k=1,
            retrieve_ms=5.2,
            prompt_ms=0.1,
            generate_ms=7000.4,
            total_ms=7006.0,
            prompt_tokens=100,
            completion_tokens=5,
            ranked=[hit],
        )


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> InProcess:
    stand_in = InProcess()
    monkeypatch.setattr(ask_module, "_pipeline", stand_in.pipeline)
    return stand_in


def ask(*args: str, port: int | None = None, env: dict[str, str] | None = None) -> Result:
    """``llmops-dagster ask QUESTION ARGS`` with the configured serving port ``port``."""
    environment = {"LLMOPS_SERVE_HOST": "127.0.0.1", **(env or {})}
    if port is not None:
        environment["LLMOPS_SERVE_PORT"] = str(port)
    return CliRunner(env=environment).invoke(main, ["ask", QUESTION, *args])


def port_of(fake: FakeService) -> int:
    return int(fake.url.rsplit(":", 1)[1])


def test_a_running_service_answers_and_the_output_says_so(in_process: InProcess) -> None:
    with running(FakeService()) as fake:
        result = ask(port=port_of(fake))
    assert result.exit_code == 0, result.output
    assert result.stdout == SERVICE_OUTPUT.format(url=fake.url)
    assert fake.paths == ["GET /healthz", "POST /v1/answer"]
    headers, body = fake.requests[1][2], fake.requests[1][3]
    assert body == {"question": QUESTION}
    assert "Authorization" not in headers  # no --api-key-env: no key sent
    assert in_process.built == []


def test_nothing_listening_answers_in_process_and_says_so(in_process: InProcess) -> None:
    with nothing_listening() as port:
        result = ask("--groups", "hr, security", port=port)
    assert result.exit_code == 0, result.output
    url = f"http://127.0.0.1:{port}"
    assert result.stdout == IN_PROCESS_OUTPUT.format(reason=f"no service at {url}")
    assert in_process.built == [("champion", {"k": None, "mode": None, "max_new_tokens": None})]
    # The in-process path keeps --groups: it asks as a member of them.
    assert in_process.principals == [Principal("cli", frozenset({"hr", "security"}))]


def test_local_forces_in_process_and_asks_no_service(in_process: InProcess) -> None:
    with running(FakeService()) as fake:
        result = ask("--local", port=port_of(fake))
    assert result.exit_code == 0, result.output
    assert result.stdout == IN_PROCESS_OUTPUT.format(reason="--local")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--bundle", "base"], "--bundle base: the service answers with the champion only"),
        (
            ["--bundle", "models:/llmops-rag-bundle@challenger"],
            "--bundle models:/llmops-rag-bundle@challenger: the service answers with the "
            "champion only",
        ),
        (
            ["--bundle", "models:/llmops-rag-bundle/3"],
            "--bundle models:/llmops-rag-bundle/3: the service answers with the champion only",
        ),
        (
            ["--k", "3", "--max-new-tokens", "40"],
            "--k, --max-new-tokens: the service answers with its bundle's settings",
        ),
    ],
)
def test_what_the_service_does_not_serve_is_answered_in_process(
    in_process: InProcess, args: list[str], reason: str
) -> None:
    with running(FakeService()) as fake:
        result = ask(*args, port=port_of(fake))
    assert result.exit_code == 0, result.output
    assert result.stdout == IN_PROCESS_OUTPUT.format(reason=reason)
    assert fake.requests == []
    assert [ref for ref, _ in in_process.built] == [
        args[1] if args[0] == "--bundle" else "champion"
    ]


def test_the_champion_by_reference_is_asked_of_the_service(in_process: InProcess) -> None:
    with running(FakeService()) as fake:
        result = ask("--bundle", "models:/llmops-rag-bundle@champion", port=port_of(fake))
    assert result.exit_code == 0, result.output
    assert result.stdout == SERVICE_OUTPUT.format(url=fake.url)
    assert in_process.built == []


def test_the_api_key_goes_from_the_named_variable_as_bearer_and_is_never_printed(
    in_process: InProcess,
) -> None:
    with running(FakeService()) as fake:
        result = ask(
            "--api-key-env", "MY_LLMOPS_KEY", port=port_of(fake), env={"MY_LLMOPS_KEY": KEY}
        )
    assert result.exit_code == 0, result.output
    assert fake.requests[1][2]["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in fake.requests[0][2]  # the health probe needs no key
    assert KEY not in result.output


def test_an_unset_api_key_variable_is_a_bad_parameter_before_anything_is_asked(
    in_process: InProcess,
) -> None:
    with running(FakeService()) as fake:
        result = ask(
            "--api-key-env", "MY_LLMOPS_KEY", port=port_of(fake), env={"MY_LLMOPS_KEY": ""}
        )
    assert result.exit_code == 2
    assert "Invalid value for --api-key-env: MY_LLMOPS_KEY is unset or empty" in result.stderr
    assert fake.requests == [] and in_process.built == []


SERVICE_ERRORS = [
    (
        401,
        {"detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"},
        {},
        "answered 401 Unauthorized: missing or invalid API key: send 'Authorization: Bearer "
        "<key>'; name the variable that holds your key with --api-key-env NAME "
        "(not answered in-process)",
    ),
    (
        403,
        {"detail": "/metrics needs a key in the 'ops' group"},
        {},
        "answered 403 Forbidden: /metrics needs a key in the 'ops' group (not answered in-process)",
    ),
    (
        429,
        {"detail": "rate limit: 10 requests at once, 60 per minute; retry later"},
        {"Retry-After": "4"},
        "answered 429 Too Many Requests: rate limit: 10 requests at once, 60 per minute; retry "
        "later (retry after 4 s) (not answered in-process)",
    ),
    (
        503,
        {"detail": "16 answers are waiting already"},
        {"Retry-After": "2"},
        "answered 503 Service Unavailable: 16 answers are waiting already (retry after 2 s) "
        "(not answered in-process)",
    ),
    (
        422,
        {"detail": [{"loc": ["body", "question"], "msg": "String should have at most 20000"}]},
        {},
        "answered 422 Unprocessable Entity: body.question: String should have at most 20000 "
        "(not answered in-process)",
    ),
]


@pytest.mark.parametrize(("status", "body", "headers", "message"), SERVICE_ERRORS)
def test_a_service_error_is_reported_with_its_status_and_never_answered_in_process(
    in_process: InProcess, status: int, body: dict, headers: dict[str, str], message: str
) -> None:
    with running(FakeService(answer=(status, body), answer_headers=headers)) as fake:
        result = ask(port=port_of(fake))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: the service at {fake.url} {message}\n"
    assert fake.paths == ["GET /healthz", "POST /v1/answer"]  # asked once, not retried
    assert in_process.built == []


def test_a_refused_key_is_said_to_be_refused(in_process: InProcess) -> None:
    refused = (401, {"detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"})
    with running(FakeService(answer=refused)) as fake:
        result = ask("--api-key-env", "K", port=port_of(fake), env={"K": KEY})
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "; the key in --api-key-env was refused (not answered in-process)\n"
    )
    assert KEY not in result.output and in_process.built == []


def test_an_explicit_server_that_does_not_answer_is_an_error_not_a_fallback(
    in_process: InProcess,
) -> None:
    with nothing_listening() as port:
        result = ask("--server", f"http://127.0.0.1:{port}/")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no service at http://127.0.0.1:{port}; leave out --server, or pass --local, "
        "to answer in-process\n"
    )
    assert in_process.built == []


def test_an_explicit_server_is_asked_instead_of_the_configured_one(in_process: InProcess) -> None:
    with running(FakeService()) as fake, nothing_listening() as configured:
        result = ask("--server", fake.url, port=configured)
    assert result.exit_code == 0, result.output
    assert result.stdout == SERVICE_OUTPUT.format(url=fake.url)


def test_something_else_on_the_port_is_no_service(in_process: InProcess) -> None:
    with running(FakeService(health=(404, b"<html>not found</html>"))) as fake:
        result = ask(port=port_of(fake))
    assert result.exit_code == 0, result.output
    reason = f"no service at {fake.url}: GET /healthz answered 404, not llmops-dagster's health"
    assert result.stdout == IN_PROCESS_OUTPUT.format(reason=reason)
    assert fake.paths == ["GET /healthz"]


def test_an_unhealthy_service_is_still_asked(in_process: InProcess) -> None:
    # 503 {"ok": false}: e.g. the tracking store is down, and answers still succeed.
    with running(FakeService(health=(503, b'{"ok": false}'))) as fake:
        result = ask(port=port_of(fake))
    assert result.exit_code == 0, result.output
    assert result.stdout == SERVICE_OUTPUT.format(url=fake.url)


def test_groups_are_not_sent_to_the_service_and_the_note_says_so(in_process: InProcess) -> None:
    with running(FakeService()) as fake:
        result = ask("--groups", "hr", port=port_of(fake))
    assert result.exit_code == 0, result.output
    assert fake.requests[1][3] == {"question": QUESTION}
    assert result.stderr == (
        "--groups is for in-process answers: the service uses the API key's groups\n"
    )


def test_json_says_who_answered_and_where(in_process: InProcess) -> None:
    with running(FakeService()) as fake:
        by_service = json.loads(ask("--json", port=port_of(fake)).stdout)
    assert by_service == {
        **ANSWER,
        "bundle_uri": "models:/llmops-rag-bundle/3",
        "answered_by": "service",
        "service_url": fake.url,
    }
    with nothing_listening() as port:
        in_proc = json.loads(ask("--json", port=port).stdout)
    url = f"http://127.0.0.1:{port}"
    assert {k: in_proc[k] for k in ("answered_by", "service_url", "in_process_reason")} == {
        "answered_by": "in-process",
        "service_url": url,
        "in_process_reason": f"no service at {url}",
    }
    assert (in_proc["answer"], in_proc["text"], in_proc["bundle_uri"]) == (
        "Founded in 2011.",
        "Founded in 2011.",
        None,
    )
    local = json.loads(ask("--json", "--local").stdout)
    assert (local["answered_by"], local["service_url"], local["in_process_reason"]) == (
        "in-process",
        None,
        "--local",
    )


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("fe80::1", "http://[fe80::1]:8000"),
        ("serve.internal", "http://serve.internal:8000"),
    ],
)
def test_the_configured_bind_address_becomes_a_url_to_connect_to(host: str, url: str) -> None:
    assert loopback_url(host, 8000) == url


def test_a_server_url_that_is_not_http_is_a_bad_parameter(in_process: InProcess) -> None:
    result = ask("--server", "localhost:8000")
    assert result.exit_code == 2
    assert "Invalid value for --server: expected http://HOST:PORT, got 'localhost:8000'" in (
        result.stderr
    )
    assert in_process.built == []
