"""Tollgate's /v1/messages through the official `anthropic` Python SDK, served by an
OpenAI-compatible provider, an Anthropic provider, a Gemini provider, a Bedrock provider and
Vertex AI (all mocked)."""

import anthropic
import pytest

MODELS = [
    "gpt-4o-mini",
    "claude-mock",
    "gemini-mock",
    "bedrock-mock",
    "vertex-gemini-mock",
    "vertex-claude-mock",
]


def prompt_tokens(*texts: str) -> int:
    return 1 + sum(len(t) for t in texts) // 4


@pytest.mark.parametrize("model", MODELS)
def test_message(anthropic_client, model):
    msg = anthropic_client.messages.create(
        model=model,
        max_tokens=3,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "tok tok tok"
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.output_tokens == 3
    assert msg.usage.input_tokens == prompt_tokens("Be brief.", "Hello there")


@pytest.mark.parametrize("model", MODELS)
def test_streaming_message(anthropic_client, model):
    with anthropic_client.messages.stream(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "Stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok tok tok tok"
    assert final.usage.output_tokens == 4


@pytest.mark.parametrize("model", MODELS)
def test_tools(anthropic_client, model):
    msg = anthropic_client.messages.create(
        model=model,
        max_tokens=50,
        tools=[
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
            }
        ],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert msg.stop_reason == "tool_use"
    block = next(b for b in msg.content if b.type == "tool_use")
    assert block.name == "get_weather"
    assert block.input == {"location": "Paris"}
    # The tool result goes back in the next turn.
    follow = anthropic_client.messages.create(
        model=model,
        max_tokens=2,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "Sunny"}]},
        ],
    )
    assert follow.content[0].text == "tok tok"


def test_bad_key_is_an_authentication_error(base_url):
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="claude-mock", max_tokens=1, messages=[{"role": "user", "content": "x"}])


def test_unknown_model_is_not_found(anthropic_client):
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.create(model="nope", max_tokens=1, messages=[{"role": "user", "content": "x"}])


def test_missing_max_tokens_is_a_bad_request(base_url, api_key):
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        client.post(
            "/v1/messages",
            cast_to=object,
            body={"model": "claude-mock", "messages": [{"role": "user", "content": "x"}]},
        )


def test_rate_limit_is_a_rate_limit_error(anthropic_client):
    with pytest.raises(anthropic.RateLimitError):
        anthropic_client.messages.create(
            model="rate-limited", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )


@pytest.mark.parametrize("model", ["claude-mock", "gpt-4o-mini"])
def test_count_tokens(anthropic_client, model):
    # Counted by the gateway's tokenizer (o200k_base), whichever provider serves the model.
    short = anthropic_client.messages.count_tokens(
        model=model, system="Be brief.", messages=[{"role": "user", "content": "Hello there"}]
    )
    longer = anthropic_client.messages.count_tokens(
        model=model,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there " * 50}],
        tools=[{"name": "get_weather", "description": "The weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    )
    assert 2 <= short.input_tokens < 20, short
    assert longer.input_tokens > short.input_tokens + 90, (short, longer)
    # A client sending its Messages body as it is, `max_tokens` included, is counted the same.
    raw = anthropic_client.post(
        "/v1/messages/count_tokens",
        cast_to=object,
        body={"model": model, "max_tokens": 5, "system": "Be brief.",
              "messages": [{"role": "user", "content": "Hello there"}]},
    )
    assert raw == {"input_tokens": short.input_tokens}, raw


def test_count_tokens_refusals(base_url, anthropic_client):
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client.messages.count_tokens(model="claude-mock", messages="not a list")
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.count_tokens(model="claude-mock", messages=[{"role": "user", "content": "x"}])
