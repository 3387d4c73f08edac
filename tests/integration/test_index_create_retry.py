"""A rebuild's index create that the client retried after a timeout (the cluster had already
created it) keeps the empty index it made; an index of the same name holding documents is
never adopted."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import BadRequestError, Elasticsearch

from llmops_dagster.search.aliases import _create_fresh_index

pytestmark = pytest.mark.integration

BODY = {"settings": {"index": {"number_of_replicas": 0}}, "mappings": {"properties": {}}}


def test_a_retried_create_of_our_own_empty_index_is_kept(es_client: Elasticsearch) -> None:
    name = f"retry-{uuid.uuid4().hex[:8]}"
    try:
        _create_fresh_index(es_client, name, BODY)
        _create_fresh_index(es_client, name, BODY)  # the retry: already there, empty
        assert es_client.count(index=name)["count"] == 0

        es_client.index(index=name, id="x", document={"text": "loaded"}, refresh=True)
        with pytest.raises(BadRequestError) as raised:
            _create_fresh_index(es_client, name, BODY)
        assert raised.value.error == "resource_already_exists_exception"
        assert es_client.count(index=name)["count"] == 1  # nothing lost
    finally:
        es_client.indices.delete(index=name, ignore_unavailable=True)
