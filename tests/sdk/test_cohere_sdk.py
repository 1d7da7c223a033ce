"""`/v1/rerank` through Cohere's own Python SDK, pointed at the gateway as at Cohere's API (the
cost is checked against the ledger in tests/tests/endpoints.rs)."""

import cohere
import pytest


@pytest.fixture(scope="module")
def cohere_client(base_url, api_key):
    return cohere.Client(api_key=api_key, base_url=base_url, timeout=30)


def test_rerank_through_coheres_sdk(cohere_client):
    answer = cohere_client.rerank(
        model="rerank-english-v3.0", query="cats", documents=["a dog", "two cats"], top_n=1
    )
    assert [(r.index, r.relevance_score) for r in answer.results] == [(1, 1.0)]
    assert answer.meta.billed_units.search_units == 1


def test_rerank_without_documents_is_a_bad_request(cohere_client):
    with pytest.raises(cohere.errors.BadRequestError) as err:
        cohere_client.rerank(model="rerank-english-v3.0", query="cats", documents=[])
    assert err.value.body["error"]["param"] == "documents", err.value.body


def test_rerank_with_a_bad_key_is_unauthorized(base_url):
    client = cohere.Client(api_key="sk-wrong", base_url=base_url, timeout=30)
    with pytest.raises(cohere.errors.UnauthorizedError):
        client.rerank(model="rerank-english-v3.0", query="cats", documents=["a dog"])
