"""Tollgate through the official `openai` Python SDK, against the mock provider.

The mock's token counts are a pure function of the request: prompt tokens = 1 + bytes of the
message contents // 4; completion tokens = max_tokens (default 16); one "tok" word per token.
"""

import openai
import pytest


def prompt_tokens(*contents: str) -> int:
    return 1 + sum(len(c) for c in contents) // 4


def test_chat_completion(openai_client):
    content = "Say hello to the gateway, please."
    resp = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}], max_tokens=5
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == "tok tok tok tok tok"
    assert resp.usage.prompt_tokens == prompt_tokens(content)
    assert resp.usage.completion_tokens == 5


def test_raw_response_carries_request_id_and_cost(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert raw.headers.get("x-request-id")
    # 1 prompt token x 150 + 2 completion tokens x 600 nano-USD (gpt-4o-mini in the model catalogue)
    assert raw.headers.get("x-tollgate-cost-nano-usd") == str(1 * 150 + 2 * 600)
    assert raw.parse().choices[0].message.content == "tok tok"


def test_streaming_hides_the_usage_chunk_unless_asked(openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], max_tokens=4, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok tok tok tok"
    assert all(getattr(c, "usage", None) is None for c in chunks), "usage chunk leaked to a client that did not ask"
    assert all(c.choices for c in chunks)


def test_streaming_with_include_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].choices == []


def test_tools(openai_client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    resp = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools
    )
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert '"Paris"' in call.function.arguments


def test_embeddings(openai_client):
    resp = openai_client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert len(resp.data) == 2
    assert len(resp.data[0].embedding) == 3
    assert resp.usage.prompt_tokens == prompt_tokens("one", "two")


def test_moderations(openai_client):
    resp = openai_client.moderations.create(
        model="omni-moderation-latest", input=["a calm sentence", "a sentence about violence"]
    )
    assert [r.flagged for r in resp.results] == [False, True]
    assert resp.results[1].categories.violence is True
    assert resp.results[1].category_scores.violence > 0.5


def test_moderations_of_text_and_image_parts(openai_client):
    raw = openai_client.moderations.with_raw_response.create(
        model="omni-moderation-latest",
        input=[
            {"type": "text", "text": "look at this"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    )
    # omni-moderation-latest costs 0 per token in the model catalogue.
    assert raw.headers.get("x-tollgate-cost-nano-usd") == "0"
    assert len(raw.parse().results) == 1


def test_moderations_on_a_provider_without_them(openai_client):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.moderations.create(model="claude-mock", input="hello")
    assert err.value.body["param"] == "model"
    assert "claude-mock" in err.value.body["message"] and "/moderations" in err.value.body["message"]


def test_rerank_through_the_sdks_raw_post(openai_client):
    # The openai SDK has no rerank method: its generic `post` sends Cohere's shape (the cost is
    # checked against the ledger in tests/tests/endpoints.rs).
    raw = openai_client.post(
        "/rerank",
        body={"model": "rerank-english-v3.0", "query": "cats", "documents": ["a dog", "two cats"], "top_n": 1},
        cast_to=object,
    )
    answer = raw
    assert answer["results"] == [{"index": 1, "relevance_score": 1.0}]
    assert answer["meta"]["billed_units"]["search_units"] == 1


def test_rerank_on_a_provider_without_it(openai_client):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.post(
            "/rerank", body={"model": "claude-mock", "query": "q", "documents": ["d"]}, cast_to=object
        )
    assert err.value.body["param"] == "model"


def test_speech(openai_client):
    raw = openai_client.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input="Hello there", response_format="mp3"
    )
    assert raw.headers.get("content-type") == "audio/mpeg"
    assert raw.content == b"ID3Hello there"
    # 11 characters at $0.000015 (tts-1 in the model catalogue).
    assert raw.headers.get("x-tollgate-cost-nano-usd") == str(11 * 15_000)


def test_speech_of_too_long_a_text_is_a_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097)
    assert err.value.body["param"] == "input"


def test_image_generation(openai_client):
    raw = openai_client.images.with_raw_response.generate(
        model="gpt-image-1-low", prompt="a lighthouse at dusk", n=2, size="1024x1024"
    )
    images = raw.parse()
    assert len(images.data) == 2
    assert images.data[0].url.startswith("https://")
    # 2 images at $0.011 (low/1024-x-1024/gpt-image-1 in the model catalogue).
    assert raw.headers.get("x-tollgate-cost-nano-usd") == str(2 * 11_000_000)


def test_image_generation_bounds_n(openai_client):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.images.generate(model="gpt-image-1-low", prompt="a cat", n=11)
    assert err.value.body["param"] == "n"


def test_transcription(openai_client):
    raw = openai_client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("talk.mp3", b"\x00" * 2_500), response_format="verbose_json"
    )
    transcript = raw.parse()
    assert transcript.text == "whisper-1 heard 2500 bytes"
    # The mock's 2,500 bytes last 2.5 s, charged as 3 s at $0.0001 (whisper-1 in the catalogue).
    assert raw.headers.get("x-tollgate-cost-nano-usd") == str(3 * 100_000)


def test_transcription_of_an_empty_file_is_a_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.audio.transcriptions.create(model="whisper-1", file=("empty.mp3", b""))
    assert err.value.body["param"] == "file"


def test_legacy_completions(openai_client):
    resp = openai_client.completions.create(model="gpt-4o-mini", prompt="Once upon", max_tokens=2)
    assert resp.choices[0].text == "tok tok"


def test_models(openai_client):
    ids = {m.id for m in openai_client.models.list()}
    assert {"gpt-4o-mini", "text-embedding-3-small"} <= ids
    assert openai_client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"


def test_bad_key_is_an_authentication_error(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert "sk-wrong" not in str(err.value)


def test_unknown_model_is_not_found(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=-3
        )
    assert err.value.body["param"] == "max_tokens"


def test_provider_rate_limit_is_a_rate_limit_error(openai_client):
    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(model="rate-limited", messages=[{"role": "user", "content": "x"}])


def test_context_window_error_falls_back(openai_client):
    resp = openai_client.chat.completions.with_raw_response.create(
        model="small-context", messages=[{"role": "user", "content": "a long prompt"}], max_tokens=1
    )
    assert resp.headers.get("x-tollgate-model-group") == "gpt-4o-mini"
    assert resp.parse().choices[0].message.content == "tok"


@pytest.mark.parametrize(
    "model",
    ["claude-mock", "gemini-mock", "bedrock-mock", "azure-mock", "vertex-gemini-mock", "vertex-claude-mock"],
)
def test_translated_providers_through_the_openai_sdk(openai_client, model):
    content = "Translate me"
    resp = openai_client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": content}], max_tokens=3
    )
    assert resp.choices[0].message.content == "tok tok tok"
    assert resp.usage.completion_tokens == 3
    assert resp.usage.prompt_tokens == prompt_tokens("sys", content)
    stream = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok tok"
    assert chunks[-1].usage.completion_tokens == 2
