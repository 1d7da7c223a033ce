//! The endpoints beyond chat, completions and embeddings (`/v1/moderations`, `/v1/rerank`,
//! `/v1/audio/speech`, `/v1/images/generations`, `/v1/audio/transcriptions` and
//! `/v1/audio/translations`), end to end: each request through the gateway to the mock provider, its usage event through real
//! Kafka into real Cassandra, and the event ledger equal, request by request, to what each
//! answer said it cost. Hostile input gets the OpenAI error envelope and no event.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::*;

/// The moderation model: priced by the test prices (the catalogue's is 0, which would prove
/// nothing about the ledger), a catalogue-priced copy, one on a provider without the endpoints,
/// a rerank model priced by the catalogue (`input_cost_per_query`), a speech model
/// (`input_cost_per_character`), an image model priced per image (`input_cost_per_image`) and
/// one priced per pixel (`input_cost_per_pixel`, through `base_model`), and a transcription
/// model priced per second (`input_cost_per_second`).
fn gateway_config(mock: &str, topic: &str) -> GatewayConfig {
    let openai = |name: &str, model: &str| {
        let mut entry = model_entry(name, &format!("{mock}/v1"));
        entry.litellm_params.model = model.to_owned();
        entry
    };
    let models = [
        openai("omni-moderation-latest", "openai/omni-moderation-latest"),
        openai("moderation-catalogue", "openai/omni-moderation-latest"),
        openai("claude-mock", "anthropic/claude-sonnet-4-20250514"),
        openai("rerank-english-v3.0", "hosted_vllm/rerank-english-v3.0"),
        openai("tts-1", "openai/tts-1"),
        openai("gpt-image-1-low", "openai/low/1024-x-1024/gpt-image-1"),
        openai("whisper-1", "openai/whisper-1"),
        {
            let mut dalle = openai("dall-e-3", "openai/dall-e-3");
            dalle.model_info = Some([("base_model".to_owned(), "azure/standard/1024-x-1024/dall-e-3".into())].into());
            dalle
        },
    ];
    let mut config = GatewayConfig::new("gw-endpoints", &models, topic, &kafka_bootstrap());
    config.prices.remove("moderation-catalogue");
    config.prices.remove("rerank-english-v3.0");
    config.prices.remove("tts-1");
    config.prices.remove("gpt-image-1-low");
    config.prices.remove("dall-e-3");
    config.prices.remove("whisper-1");
    config.gateway.max_upload_bytes = Some(MAX_UPLOAD_BYTES);
    config.gateway.max_body_bytes = Some(65_536);
    config
}

async fn post(client: &reqwest::Client, url: &str, id: &str, body: &Value) -> Result<(u16, Option<i64>, Value)> {
    let resp = client.post(url).bearer_auth(TENANT_KEYS[0].0).header("x-request-id", id).json(body).send().await?;
    let status = resp.status().as_u16();
    let cost = resp.headers().get("x-tollgate-cost-nano-usd").map(|v| v.to_str().map(str::parse)).transpose()?;
    let text = resp.text().await?;
    let answer = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    Ok((status, cost.transpose()?, answer))
}

fn assert_invalid(answer: &(u16, Option<i64>, Value), param: Option<&str>, mentions: &[&str]) {
    let (status, _, body) = answer;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"].as_str(), param, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for word in mentions {
        assert!(message.contains(word), "the message should name {word}: {body}");
    }
}

/// `base` with `field` set to `value`.
fn with_field(base: &Value, field: &str, value: Value) -> Value {
    let mut body = base.clone();
    body[field] = value;
    body
}

/// Each body refused with a 400 naming its `param` and its `mentions`, under the ids
/// `{prefix}-bad-{i}`.
async fn assert_refusals(
    client: &reqwest::Client,
    url: &str,
    prefix: &str,
    refusals: &[(Value, Option<&str>, Vec<&str>)],
) -> Result<()> {
    for (i, (body, param, mentions)) in refusals.iter().enumerate() {
        assert_invalid(&post(client, url, &format!("{prefix}-bad-{i}"), body).await?, *param, mentions);
    }
    Ok(())
}

/// The parts of an event's cost that cost something: `(token type, units, nano-USD)`.
fn paid(event: &tollgate_schemas::UsageEvent) -> Vec<(&str, u64, i64)> {
    event
        .cost_by_token_type
        .iter()
        .filter(|p| p.cost_nano_usd.0 > 0)
        .map(|p| (p.token_type.as_str(), p.tokens, p.cost_nano_usd.0))
        .collect()
}

/// The mock, a gateway and a ledger consumer on a topic and keyspace of their own.
struct Stack {
    mock: Process,
    gateway: Process,
    consumer: Process,
    topic: String,
    keyspace: String,
}

impl Stack {
    async fn start(name: &str) -> Result<Stack> {
        let dir = scratch_dir(name)?;
        let topic = unique("usage-endpoints-");
        let keyspace = unique("endpoints_");
        create_topic(&topic, 1).await?;
        let mock = start_mock(&dir, &[]).await?;
        let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)).await?;
        let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
        Ok(Stack { mock, gateway, consumer, topic, keyspace })
    }

    /// The event ledger holds each of `charged` once, at its charge, and `others` besides.
    async fn assert_ledger(&self, charged: &[(&str, i64)], others: &[&str]) -> Result<()> {
        let session = cql().await?;
        let ids: Vec<&str> = charged.iter().map(|(id, _)| *id).chain(others.iter().copied()).collect();
        let ledger = wait_for_layer1(&session, &self.keyspace, &ids).await?;
        for (id, cost) in charged {
            assert_eq!(ledger[*id], (*cost, 1), "{id}: in the ledger once, at its charge");
        }
        let (rows, _) = event_ledger_totals(&session, &self.keyspace).await?;
        assert_eq!(rows, ids.len() as i64);
        Ok(())
    }

    async fn stop(self) -> Result<()> {
        self.consumer.stop().await?;
        self.gateway.stop().await?;
        drop(self.mock);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderations_are_metered_exactly_once_by_their_input_tokens() -> Result<()> {
    let stack = Stack::start("endpoints-moderations").await?;
    let topic = &stack.topic;
    let url = format!("{}/v1/moderations", stack.gateway.url()?);
    let client = reqwest::Client::new();

    // Every shape of `input` OpenAI takes: a string, strings, and text and image parts.
    let inputs = [
        ("mod-string", json!("I want to talk about violence in films")),
        ("mod-strings", json!(["a kind sentence", "another kind sentence, a little longer"])),
        (
            "mod-parts",
            json!([{"type": "text", "text": "describe this"},
                   {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]),
        ),
    ];
    let mut charged = Vec::new();
    for (id, input) in &inputs {
        let (status, cost, answer) =
            post(&client, &url, id, &json!({"model": "omni-moderation-latest", "input": input})).await?;
        ensure!(status == 200, "{id}: {status} {answer}");
        let results = answer["results"].as_array().context("no results")?;
        let expected = if input.is_array() && input[0].is_string() { 2 } else { 1 };
        assert_eq!(results.len(), expected, "{id}: {answer}");
        let cost = cost.context("no cost header")?;
        assert!(cost > 0, "{id}: a priced moderation costs something");
        charged.push((*id, cost));
    }
    assert_eq!(
        post(&client, &url, "mod-flag", &json!({"model": "moderation-catalogue", "input": "violence"})).await?.2
            ["results"][0]["flagged"],
        true
    );

    // Hostile or unservable input: 400 in the envelope, nothing metered.
    let refusals = [
        (json!({"model": "omni-moderation-latest"}), Some("input"), vec!["input"]),
        (json!({"model": "omni-moderation-latest", "input": 7}), Some("input"), vec!["input"]),
        (json!({"model": "omni-moderation-latest", "input": "x", "stream": true}), Some("stream"), vec!["moderations"]),
        (json!({"input": "x"}), Some("model"), vec!["model"]),
        (json!({"model": "claude-mock", "input": "x"}), Some("model"), vec!["claude-mock", "/moderations"]),
    ];
    assert_refusals(&client, &url, "mod", &refusals).await?;
    let huge = json!({"model": "omni-moderation-latest", "input": "y".repeat(100_000)});
    assert_eq!(post(&client, &url, "mod-huge", &huge).await?.0, 413);

    // Each event: the prompt counted by Tollgate (OpenAI's answer has no usage), nothing
    // generated, the cost its tokens at the configured price, the cost the client was told.
    let events = collect_events(topic, inputs.len() + 1, Duration::from_secs(60)).await?;
    assert_eq!(events.len(), inputs.len() + 1, "refused requests produce no event");
    for (id, cost) in &charged {
        let event = &events[*id];
        assert!(event.estimated, "{id}: counted by Tollgate");
        assert!(event.prompt_tokens > 0, "{id}");
        assert_eq!(event.completion_tokens, 0, "{id}");
        assert_eq!(event.cost_nano_usd.0, i64::try_from(event.prompt_tokens)? * INPUT_PRICE, "{id}");
        assert_eq!(event.cost_nano_usd.0, *cost, "{id}: the event holds what the client was told");
    }
    assert_eq!(events["mod-flag"].cost_nano_usd.0, 0, "the catalogue prices omni-moderation-latest at 0");
    assert!(events["mod-flag"].prompt_tokens > 0);

    stack.assert_ledger(&charged, &["mod-flag"]).await?;
    stack.stop().await
}

/// `rerank-english-v3.0` costs $0.002 a search unit in the model catalogue, 0 per token.
const NANO_USD_PER_SEARCH_UNIT: i64 = 2_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_is_metered_exactly_once_by_search_units() -> Result<()> {
    let stack = Stack::start("endpoints-rerank").await?;
    let url = format!("{}/v1/rerank", stack.gateway.url()?);
    let client = reqwest::Client::new();
    let docs = |n: usize| (0..n).map(|i| format!("document {i} about cats")).collect::<Vec<_>>();

    // Cohere bills a search unit per 100 documents: 3 documents are 1 unit, 250 are 3.
    let mut charged = Vec::new();
    for (id, n, units) in [("rr-small", 3, 1), ("rr-large", 250, 3)] {
        let mut body = json!({"model": "rerank-english-v3.0", "query": "cats", "documents": docs(n), "top_n": 2});
        if n == 3 {
            body["documents"] = json!(["a dog", {"text": "a cat and cats"}, "the weather"]);
        }
        let (status, cost, answer) = post(&client, &url, id, &body).await?;
        ensure!(status == 200, "{id}: {status} {answer}");
        assert_eq!(answer["results"].as_array().map(Vec::len), Some(2), "{id}: {answer}");
        assert_eq!(answer["meta"]["billed_units"]["search_units"], units, "{id}");
        assert_eq!(cost, Some(units * NANO_USD_PER_SEARCH_UNIT), "{id}");
        charged.push((id, units * NANO_USD_PER_SEARCH_UNIT));
    }
    assert_eq!(
        post(
            &client,
            &url,
            "rr-order",
            &json!({"model": "rerank-english-v3.0", "query": "cats",
            "documents": ["a dog", "cats"]})
        )
        .await?
        .2["results"][0]["index"],
        1
    );

    let base = json!({"model": "rerank-english-v3.0", "query": "q", "documents": ["d"]});
    let with = |field: &str, value: Value| with_field(&base, field, value);
    let refusals = [
        (with("query", Value::Null), Some("query"), vec!["query"]),
        (with("documents", json!("d")), Some("documents"), vec!["documents"]),
        (with("documents", json!([])), Some("documents"), vec!["documents"]),
        (with("documents", json!(vec!["d"; 10_001])), Some("documents"), vec!["10000"]),
        (with("stream", json!(true)), Some("stream"), vec!["rerank"]),
        (with("model", json!("claude-mock")), Some("model"), vec!["claude-mock", "/rerank"]),
    ];
    assert_refusals(&client, &url, "rr", &refusals).await?;

    let events = collect_events(&stack.topic, 3, Duration::from_secs(60)).await?;
    assert_eq!(events.len(), 3, "refused requests produce no event");
    for (id, cost) in &charged {
        let event = &events[*id];
        assert_eq!(event.cost_nano_usd.0, *cost, "{id}");
        assert_eq!(i64::try_from(event.search_units)? * NANO_USD_PER_SEARCH_UNIT, *cost, "{id}");
        assert_eq!(
            paid(event),
            vec![("search_units", event.search_units, *cost)],
            "{id}: tokens cost 0, units the rest"
        );
    }
    stack.assert_ledger(&charged, &["rr-order"]).await?;
    stack.stop().await
}

/// `tts-1` costs $0.000015 a character in the model catalogue.
const NANO_USD_PER_CHARACTER: i64 = 15_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_is_metered_exactly_once_by_its_characters() -> Result<()> {
    let stack = Stack::start("endpoints-speech").await?;
    let url = format!("{}/v1/audio/speech", stack.gateway.url()?);
    let client = reqwest::Client::new();

    // Characters, not bytes: "é" and "✓" are one each.
    let mut charged = Vec::new();
    for (id, text, format, content_type) in [
        ("tts-ascii", "Hello from Tollgate.", "mp3", "audio/mpeg"),
        ("tts-accents", "Café ✓ déjà vu", "wav", "audio/wav"),
    ] {
        let body = json!({"model": "tts-1", "voice": "alloy", "input": text, "response_format": format});
        let resp =
            client.post(&url).bearer_auth(TENANT_KEYS[0].0).header("x-request-id", id).json(&body).send().await?;
        ensure!(resp.status() == 200, "{id}: {}", resp.status());
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(header("content-type").as_deref(), Some(content_type), "{id}: the audio's type is kept");
        let cost: i64 = header("x-tollgate-cost-nano-usd").context("no cost header")?.parse()?;
        let audio = resp.bytes().await?;
        assert_eq!(&audio[..], [&b"ID3"[..], text.as_bytes()].concat(), "{id}: the audio passes through");
        let characters = i64::try_from(text.chars().count())?;
        assert_eq!(cost, characters * NANO_USD_PER_CHARACTER, "{id}");
        charged.push((id, cost));
    }

    let base = json!({"model": "tts-1", "voice": "alloy", "input": "hi"});
    let with = |field: &str, value: Value| with_field(&base, field, value);
    let refusals = [
        (with("input", Value::Null), Some("input"), vec!["input"]),
        (with("input", json!("")), Some("input"), vec!["input"]),
        (with("input", json!(["hi"])), Some("input"), vec!["input"]),
        (with("input", json!("é".repeat(4_097))), Some("input"), vec!["4096"]),
        (with("stream", json!(true)), Some("stream"), vec!["audio/speech"]),
        (with("model", json!("claude-mock")), Some("model"), vec!["claude-mock", "/audio/speech"]),
    ];
    assert_refusals(&client, &url, "tts", &refusals).await?;

    let events = collect_events(&stack.topic, 2, Duration::from_secs(60)).await?;
    assert_eq!(events.len(), 2, "refused requests produce no event");
    for (id, cost) in &charged {
        let event = &events[*id];
        assert_eq!(event.cost_nano_usd.0, *cost, "{id}");
        assert_eq!(i64::try_from(event.characters)? * NANO_USD_PER_CHARACTER, *cost, "{id}");
        assert_eq!(event.completion_tokens, 0, "{id}: audio is not counted as text");
    }
    stack.assert_ledger(&charged, &[]).await?;
    stack.stop().await
}

/// `low/1024-x-1024/gpt-image-1` costs $0.011 an image in the model catalogue.
const NANO_USD_PER_IMAGE: i64 = 11_000_000;

/// `azure/standard/1024-x-1024/dall-e-3`'s $4.19617e-08 a pixel, exactly 419 617 / 10 000
/// nano-USD: the cost of `pixels`, rounded up once.
fn pixel_cost(pixels: i64) -> i64 {
    (pixels * 419_617 + 9_999) / 10_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_metered_exactly_once_per_image_or_per_pixel() -> Result<()> {
    let stack = Stack::start("endpoints-images").await?;
    let url = format!("{}/v1/images/generations", stack.gateway.url()?);
    let client = reqwest::Client::new();

    // Per image: the images answered (the mock answers one when the prompt asks it to, whatever
    // `n`), at most those asked for; per pixel: width × height of each.
    let one_only = format!("{} a lighthouse", tollgate_benches::mock_media::ONE_IMAGE_ONLY);
    let cases = [
        (
            "img-two",
            json!({"model": "gpt-image-1-low", "prompt": "a lighthouse", "n": 2, "size": "1024x1024"}),
            2,
            2 * NANO_USD_PER_IMAGE,
            "images",
            2,
        ),
        (
            "img-fewer",
            json!({"model": "gpt-image-1-low", "prompt": one_only, "n": 3}),
            1,
            NANO_USD_PER_IMAGE,
            "images",
            1,
        ),
        (
            "img-pixels",
            json!({"model": "dall-e-3", "prompt": "a lighthouse", "size": "1024x1792", "quality": "standard",
                   "response_format": "b64_json"}),
            1,
            pixel_cost(1_024 * 1_792),
            "pixels",
            1_024 * 1_792,
        ),
    ];
    let mut charged = Vec::new();
    for (id, body, images, expected, _, _) in &cases {
        let (status, cost, answer) = post(&client, &url, id, body).await?;
        ensure!(status == 200, "{id}: {status} {answer}");
        assert_eq!(answer["data"].as_array().map(Vec::len), Some(*images), "{id}: {answer}");
        assert_eq!(cost, Some(*expected), "{id}");
        charged.push((*id, *expected));
    }
    let anonymous = client.post(&url).json(&cases[0].1).send().await?;
    assert_eq!(anonymous.status(), 401, "a request without a key is refused");

    let base = json!({"model": "gpt-image-1-low", "prompt": "a cat", "size": "1024x1024"});
    let with = |field: &str, value: Value| with_field(&base, field, value);
    let refusals = [
        (with("prompt", Value::Null), Some("prompt"), vec!["prompt"]),
        (with("prompt", json!("")), Some("prompt"), vec!["prompt"]),
        (with("prompt", json!("p".repeat(32_001))), Some("prompt"), vec!["32000"]),
        (with("n", json!(11)), Some("n"), vec!["1 to 10"]),
        (with("n", json!(0)), Some("n"), vec!["1 to 10"]),
        (with("size", json!("10x10")), Some("size"), vec!["size"]),
        (with("size", json!("1024x1024x1")), Some("size"), vec!["size"]),
        (with("quality", json!("q".repeat(33))), Some("quality"), vec!["quality"]),
        (with("stream", json!(true)), Some("stream"), vec!["images/generations"]),
        (with("model", json!("claude-mock")), Some("model"), vec!["claude-mock", "/images/generations"]),
    ];
    assert_refusals(&client, &url, "img", &refusals).await?;

    let events = collect_events(&stack.topic, cases.len(), Duration::from_secs(60)).await?;
    assert_eq!(events.len(), cases.len(), "refused requests produce no event");
    for (id, _, images, cost, token_type, units) in &cases {
        let event = &events[*id];
        assert_eq!(event.cost_nano_usd.0, *cost, "{id}");
        assert_eq!(event.images, *images as u64, "{id}");
        assert_eq!(
            event.pixels,
            *images as u64 * if *token_type == "pixels" { 1_024 * 1_792 } else { 1_048_576 },
            "{id}"
        );
        assert_eq!(event.completion_tokens, 0, "{id}: images are not counted as text");
        assert_eq!(
            paid(event),
            vec![(*token_type, *units as u64, *cost)],
            "{id}: per image, else per pixel, never both"
        );
    }
    stack.assert_ledger(&charged, &[]).await?;
    stack.stop().await
}

/// The test gateways' `gateway.max_upload_bytes`.
const MAX_UPLOAD_BYTES: usize = 200_000;

/// `whisper-1` costs $0.0001 a second in the model catalogue.
const NANO_USD_PER_SECOND: i64 = 100_000;

/// A part of a multipart form: its name, its file name (for a file) and its data.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A multipart form of `parts`, with its content type.
fn form(parts: &[Part]) -> (String, Vec<u8>) {
    let boundary = "e2e-boundary-7f3a";
    let mut out = Vec::new();
    for (name, file, data) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file {
            Some(f) => format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/mpeg\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        };
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

async fn upload(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    (content_type, body): (String, Vec<u8>),
) -> Result<(u16, Option<i64>, String)> {
    let resp = client
        .post(url)
        .bearer_auth(TENANT_KEYS[0].0)
        .header("x-request-id", id)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let cost = resp.headers().get("x-tollgate-cost-nano-usd").map(|v| v.to_str().map(str::parse)).transpose()?;
    Ok((status, cost.transpose()?, resp.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcriptions_are_metered_exactly_once_by_the_seconds_reported() -> Result<()> {
    let stack = Stack::start("endpoints-transcriptions").await?;
    let base = stack.gateway.url()?.to_owned();
    let url = format!("{base}/v1/audio/transcriptions");
    let client = reqwest::Client::new();
    let audio = |bytes: usize| (0..bytes).map(|i| (i % 251) as u8).collect::<Vec<u8>>();

    // The mock's audio lasts 1 second a 1,000 bytes; OpenAI reports whole seconds in `json`
    // (`usage.seconds`) and the exact duration in `verbose_json`, which Tollgate rounds up.
    let cases = [
        ("stt-json", "audio/transcriptions", 2_500, "json", 3),
        ("stt-verbose", "audio/transcriptions", 8_470, "verbose_json", 9),
        ("stt-translate", "audio/translations", 1_000, "json", 1),
        ("stt-text", "audio/transcriptions", 4_000, "text", 0),
    ];
    let mut charged = Vec::new();
    for (id, path, bytes, format, seconds) in cases {
        let file = audio(bytes);
        let parts = [
            ("model", None, &b"whisper-1"[..]),
            ("file", Some("talk.mp3"), &file),
            ("response_format", None, format.as_bytes()),
        ];
        let (status, cost, answer) = upload(&client, &format!("{base}/v1/{path}"), id, form(&parts)).await?;
        ensure!(status == 200, "{id}: {status} {answer}");
        assert!(
            answer.contains(&format!("whisper-1 heard {bytes} bytes")),
            "{id}: the whole file went upstream: {answer}"
        );
        assert_eq!(cost, Some(seconds * NANO_USD_PER_SECOND), "{id}");
        charged.push((id, seconds * NANO_USD_PER_SECOND));
    }

    let file = audio(100);
    let model = ("model", None, &b"whisper-1"[..]);
    let mp3 = ("file", Some("a.mp3"), &file[..]);
    let big_prompt = vec![b'p'; 9_000];
    let many: Vec<_> = (0..40).map(|_| ("include[]", None, &b"logprobs"[..])).collect();
    let too_many: Vec<_> = [model, mp3].into_iter().chain(many).collect();
    let refusals: Vec<(Vec<Part>, Option<&str>, &str)> = vec![
        (vec![model], Some("file"), "file"),
        (vec![model, ("file", Some("a.mp3"), b"")], Some("file"), "file"),
        (vec![mp3], Some("model"), "model"),
        (vec![model, mp3, ("prompt", None, &big_prompt)], None, "multipart"),
        (too_many, None, "32 parts"),
        (vec![model, mp3, ("stream", None, b"true")], Some("stream"), "audio/transcriptions"),
        (vec![("model", None, b"claude-mock"), mp3], Some("model"), "/audio/transcriptions"),
    ];
    for (i, (parts, param, mentions)) in refusals.into_iter().enumerate() {
        let (status, _, text) = upload(&client, &url, &format!("stt-bad-{i}"), form(&parts)).await?;
        let body: Value = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
        assert_invalid(&(status, None, body), param, &[mentions]);
    }
    let json_body = ("application/json".to_owned(), br#"{"model": "whisper-1"}"#.to_vec());
    let (status, _, text) = upload(&client, &url, "stt-json-body", json_body).await?;
    assert_invalid(&(status, None, serde_json::from_str(&text)?), None, &["multipart/form-data"]);
    let huge = audio(MAX_UPLOAD_BYTES + 1);
    let (status, _, text) = upload(&client, &url, "stt-huge", form(&[model, ("file", Some("a.mp3"), &huge)])).await?;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");

    let events = collect_events(&stack.topic, cases.len(), Duration::from_secs(60)).await?;
    assert_eq!(events.len(), cases.len(), "refused requests produce no event");
    for (id, _, _, _, seconds) in cases {
        let event = &events[id];
        assert_eq!(event.audio_seconds, seconds as u64, "{id}");
        assert_eq!(event.cost_nano_usd.0, seconds * NANO_USD_PER_SECOND, "{id}");
        assert_eq!(event.estimated, seconds == 0, "{id}: no duration reported is said so");
        let paid: Vec<_> = event.cost_by_token_type.iter().map(|p| (p.token_type.as_str(), p.tokens)).collect();
        let expected = if seconds > 0 { vec![("seconds", seconds as u64)] } else { vec![] };
        assert_eq!(paid, expected, "{id}");
    }
    stack.assert_ledger(&charged, &[]).await?;
    stack.stop().await
}
