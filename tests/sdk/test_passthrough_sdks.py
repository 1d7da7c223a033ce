"""Tollgate's pass-through routes through the official SDKs, pointed at them as LiteLLM users
point theirs: the `openai` SDK at `<gateway>/openai/v1`, the `anthropic` SDK at
`<gateway>/anthropic`. The provider's own API comes back; the virtual key is checked and
the answer metered (the mock's token counts: see test_openai_sdk.py)."""

import anthropic
import openai
import pytest


def prompt_tokens(*contents: str) -> int:
    return 1 + sum(len(c) for c in contents) // 4


@pytest.fixture(scope="module")
def openai_passthrough(base_url, api_key):
    return openai.OpenAI(base_url=f"{base_url}/openai/v1", api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def anthropic_passthrough(base_url, api_key):
    return anthropic.Anthropic(base_url=f"{base_url}/anthropic", api_key=api_key, max_retries=0, timeout=30)


def test_openai_chat_through_the_passthrough(openai_passthrough):
    raw = openai_passthrough.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "tok tok"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt_tokens("hi"), 2)
    # Metered by the provider's own usage: 1 x 150 + 2 x 600 nano-USD (gpt-4o-mini).
    assert raw.headers.get("x-tollgate-cost-nano-usd") == str(1 * 150 + 2 * 600)
    assert raw.headers.get("x-request-id")


def test_openai_stream_through_the_passthrough_is_metered_without_include_usage(openai_passthrough):
    with openai_passthrough.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    ) as raw:
        chunks = list(raw.parse())
        cost = raw.headers.get("x-tollgate-cost-nano-usd")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["tok", "tok", "tok"]
    # The client did not ask for usage: the gateway asked the provider for it and kept it back.
    assert all(c.usage is None for c in chunks)
    # A stream's cost is known only at its end, after the headers: none is promised up front.
    assert cost is None


def test_openai_models_through_the_passthrough(openai_passthrough):
    models = openai_passthrough.models.list()
    assert any(m.id for m in models.data)


def test_openai_passthrough_refuses_a_bad_key(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/openai/v1", api_key="sk-wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_anthropic_message_through_the_passthrough(anthropic_passthrough):
    raw = anthropic_passthrough.messages.with_raw_response.create(
        model="claude-mock", max_tokens=3, messages=[{"role": "user", "content": "Hello there"}]
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.content[0].text == "tok tok tok"
    assert msg.usage.output_tokens == 3
    assert raw.headers.get("x-tollgate-cost-nano-usd") is not None


def test_anthropic_stream_through_the_passthrough(anthropic_passthrough):
    with anthropic_passthrough.messages.stream(
        model="claude-mock", max_tokens=2, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.split() == ["tok", "tok"]
    assert final.usage.output_tokens == 2


def test_translation(openai_client):
    raw = openai_client.audio.translations.with_raw_response.create(
        model="whisper-1", file=("talk.mp3", b"\x00" * 1_200), response_format="verbose_json"
    )
    assert raw.parse().text == "whisper-1 heard 1200 bytes"
    # 1,200 bytes last 1.2 s in the mock, charged as 2 s at $0.0001 a second (whisper-1).
    assert raw.headers.get("x-tollgate-cost-nano-usd") == str(2 * 100_000)


@pytest.fixture(scope="module")
def gemini_passthrough(base_url, api_key):
    from google import genai
    from google.genai import types

    # As LiteLLM users point Google's SDK at its pass-through: the key goes as `x-goog-api-key`.
    options = types.HttpOptions(base_url=f"{base_url}/gemini", timeout=30_000)
    return genai.Client(api_key=api_key, http_options=options)


def test_gemini_through_the_passthrough_with_googles_sdk(gemini_passthrough):
    from google.genai import types

    resp = gemini_passthrough.models.generate_content(
        model="gemini-mock", contents="Hello there", config=types.GenerateContentConfig(max_output_tokens=3)
    )
    assert resp.text and resp.text.split() == ["tok"] * 3, resp
    assert resp.usage_metadata.candidates_token_count == 3, resp.usage_metadata
    headers = resp.sdk_http_response.headers
    assert headers.get("x-tollgate-cost-nano-usd") is not None and headers.get("x-request-id"), headers


def test_gemini_stream_through_the_passthrough_with_googles_sdk(gemini_passthrough):
    from google.genai import types

    chunks = list(
        gemini_passthrough.models.generate_content_stream(
            model="gemini-mock", contents="Hello", config=types.GenerateContentConfig(max_output_tokens=2)
        )
    )
    assert "".join(c.text or "" for c in chunks).split() == ["tok", "tok"], chunks
    assert chunks[-1].usage_metadata.candidates_token_count == 2, chunks[-1]


def test_gemini_passthrough_refuses_a_bad_key_through_googles_sdk(base_url):
    from google import genai
    from google.genai import errors, types

    client = genai.Client(api_key="sk-wrong", http_options=types.HttpOptions(base_url=f"{base_url}/gemini"))
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-mock", contents="hi")
    assert err.value.code == 401
