"""A client of a running ``llmops-dagster serve``: is one there, and its answer to a question.

``llmops-dagster ask`` uses it to answer in the time of one generation instead of loading the
bundle and models itself. Plain HTTP on httpx, no FastAPI import: the routes are the app's
(``tests/unit/test_ask_service.py`` checks them against ``serving/app.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

HEALTH_ROUTE = "/healthz"
ANSWER_ROUTE = "/v1/answer"
#: Nothing listening is refused at once; a host that drops packets gets this long to connect.
PROBE_CONNECT_S = 0.5
#: Once connected, the health route may run its checks (at most once per 2 s on the server;
#: Elasticsearch's alone may take 5 s): a slow health answer still means a running service.
PROBE_READ_S = 10.0
#: The server bounds its own queue (LLMOPS_QUEUE_TIMEOUT_S, then 503) and generation; this
#: only keeps a hung server from hanging the caller.
ANSWER_TIMEOUT_S = 600.0


class ServiceError(Exception):
    """The service did not answer the question: its status (None = no HTTP answer) and why."""

    def __init__(
        self, url: str, status: int | None, reason: str, retry_after: str | None = None
    ) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.status is None:
            return f"the service at {self.url} gave no answer: {self.reason}"
        phrase = httpx.codes.get_reason_phrase(self.status)
        text = f"the service at {self.url} answered {self.status} {phrase}: {self.reason}"
        if self.retry_after:
            text += f" (retry after {self.retry_after} s)"
        return text


@dataclass(frozen=True)
class Probe:
    """Whether an ``llmops-dagster serve`` answers at ``url``; ``detail``: why not (None when
    nothing listens there at all)."""

    url: str
    running: bool
    detail: str | None = None

    def absence(self) -> str:
        """'no service at URL' and, when something other than a refused connection, why."""
        return f"no service at {self.url}" + (f": {self.detail}" if self.detail else "")


def loopback_url(host: str, port: int) -> str:
    """The URL this machine reaches ``serve --host HOST --port PORT`` at: a wildcard bind
    address (0.0.0.0, ::) is not an address to connect to, its loopback is."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


def check_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError unless it is http(s)://HOST[:PORT]."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"expected http://HOST:PORT, got {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"expected http://HOST:PORT, got {url!r}")
    return url.rstrip("/")


def probe(url: str, *, connect_s: float = PROBE_CONNECT_S, read_s: float = PROBE_READ_S) -> Probe:
    """GET the health route. The service is there when it answers as ours does: 200 or 503
    with a JSON ``{"ok": bool}`` (503 = a dependency is down; the answer route may still
    answer, and says so itself when it cannot)."""
    timeout = httpx.Timeout(read_s, connect=connect_s)
    try:
        response = httpx.get(f"{url}{HEALTH_ROUTE}", timeout=timeout)
    except httpx.ConnectError:
        return Probe(url, running=False)
    except httpx.ConnectTimeout:
        return Probe(url, running=False, detail=f"no connection within {connect_s:g} s")
    except httpx.TimeoutException:
        return Probe(url, running=False, detail=f"GET {HEALTH_ROUTE}: no answer in {read_s:g} s")
    except httpx.HTTPError as exc:
        return Probe(url, running=False, detail=f"GET {HEALTH_ROUTE}: {type(exc).__name__}")
    try:
        body = response.json()
    except ValueError:
        body = None
    ours = isinstance(body, dict) and isinstance(body.get("ok"), bool)
    if response.status_code in (200, 503) and ours:
        return Probe(url, running=True)
    return Probe(
        url,
        running=False,
        detail=f"GET {HEALTH_ROUTE} answered {response.status_code}, not llmops-dagster's health",
    )


def ask_service(
    url: str, question: str, *, api_key: str | None = None, timeout_s: float = ANSWER_TIMEOUT_S
) -> dict[str, Any]:
    """The service's answer (``POST /v1/answer``'s body) to ``question``, asked with
    ``api_key`` (``Authorization: Bearer``) when given. Any status but 200 is a
    :class:`ServiceError` with the service's own reason; the key is never in it."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(
            f"{url}{ANSWER_ROUTE}",
            json={"question": question},
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=PROBE_READ_S),
        )
    except httpx.TimeoutException as exc:
        raise ServiceError(url, None, f"no answer within {timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise ServiceError(url, None, f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise ServiceError(
            url,
            response.status_code,
            _reason(response),
            retry_after=response.headers.get("retry-after"),
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise ServiceError(url, 200, "the body is not JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("answer"), str):
        raise ServiceError(url, 200, "the body is not an answer (no 'answer' text)")
    return body


def _reason(response: httpx.Response) -> str:
    """FastAPI's ``detail`` (a message, or the validation errors), else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ...}, ...]
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return response.text.strip()[:200] or "no reason given"
