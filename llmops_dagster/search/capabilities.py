"""What the cluster and the alias allow, probed once and cached per retriever.

- Server-side RRF: Elasticsearch's ``rrf`` retriever needs the x-pack rank-rrf module and an
  Enterprise license, so it is probed with a size-0 search before ``server_rrf`` is used; a
  rejection is cached with its reason (the retriever then fuses client-side).
- The stemming route: the alias's ``_meta.text_stemming`` says which BM25 fields to search
  (:mod:`llmops_dagster.search.mapping`); it is re-read after ``ttl_s`` so an alias swap to an
  index built another way is picked up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exceptions

from llmops_dagster.search.mapping import TextStemming, index_meta, text_stemming_of

log = logging.getLogger(__name__)

#: Two ``match_none`` sub-retrievers: costs next to nothing, and only the retriever's
#: availability can make it fail.
RRF_PROBE = {
    "rrf": {
        "retrievers": [
            {"standard": {"query": {"match_none": {}}}},
            {"standard": {"query": {"match_none": {}}}},
        ]
    }
}


class AliasCapabilities:
    """The answers of one alias's probes (not thread-shared state: one per retriever)."""

    def __init__(
        self,
        client: Elasticsearch,
        alias: str,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.alias = alias
        self.ttl_s = ttl_s
        self.clock = clock
        self._server_rrf: bool | None = None
        #: Why ``server_rrf`` is not available (None: it is, or it was not probed yet).
        self.server_rrf_fallback_reason: str | None = None
        self._stemming: TextStemming | None = None
        self._stemming_read_at = 0.0

    def supports_server_rrf(self) -> bool:
        """Probe once whether the cluster accepts the ``rrf`` retriever on this alias.

        A missing rank-rrf module answers 400 "unknown retriever [rrf]"; a basic license
        answers 403 (non-compliant license). Either way the answer is cached.
        """
        if self._server_rrf is None:
            try:
                self.client.search(index=self.alias, retriever=RRF_PROBE, size=0)
            except (es_exceptions.BadRequestError, es_exceptions.AuthorizationException) as exc:
                self._server_rrf = False
                self.server_rrf_fallback_reason = (
                    f"cluster rejected the rrf retriever ({exc.meta.status} {exc.message}: "
                    f"{root_reason(exc.body)}); server-side RRF needs the rank-rrf module "
                    "and an Enterprise license"
                )
                log.warning(
                    "server_rrf unavailable, using client-side RRF instead: %s",
                    self.server_rrf_fallback_reason,
                )
            else:
                self._server_rrf = True
        return self._server_rrf

    def index_stemming(self) -> TextStemming:
        """The alias's stemming route from its ``_meta`` (cached ``ttl_s``).

        A missing alias reads as ``none``: the search itself then fails with its own
        ``index_not_found`` reason, which names the alias. A credential without the
        ``view_index_metadata`` privilege reads as ``none`` too (plain fields: BM25 still works,
        unstemmed), with a warning naming the privilege or ``bm25_fields`` to set instead.
        """
        now = self.clock()
        if self._stemming is None or now - self._stemming_read_at > self.ttl_s:
            try:
                self._stemming = text_stemming_of(index_meta(self.client, self.alias))
            except es_exceptions.NotFoundError:
                self._stemming = "none"
            except es_exceptions.AuthorizationException as exc:
                if self._stemming is None:
                    log.warning(
                        "cannot read the mapping of %s (%s): searching the plain text fields; "
                        "grant view_index_metadata on it or set RetrieverConfig.bm25_fields",
                        self.alias,
                        exc.message,
                    )
                self._stemming = "none"
            self._stemming_read_at = now
        return self._stemming


def root_reason(body: Any) -> str:
    """The first root cause's reason of an Elasticsearch error body (else the body, cut)."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            root = (error.get("root_cause") or [error])[0]
            return str(root.get("reason", ""))
    return str(body)[:200]
