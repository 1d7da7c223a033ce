//! Translation, URLs and stream tests of the Bedrock family.

use super::converse::*;
use super::eventstream::encode;
use super::stream::{ConverseToChatStream, FrameStream};
use super::*;
use crate::providers::{Provider, StreamError};
use futures::StreamExt;
use serde_json::{json, Value};

fn event(kind: &str, payload: Value) -> Vec<u8> {
    encode(&[(":message-type", "event"), (":event-type", kind)], payload.to_string().as_bytes())
}

/// The events of a short answer, "Hello world", with its usage.
pub(super) fn answer_events() -> Vec<Vec<u8>> {
    vec![
        event("messageStart", json!({"role": "assistant"})),
        event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}})),
        event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": " world"}})),
        event("contentBlockStop", json!({"contentBlockIndex": 0})),
        event("messageStop", json!({"stopReason": "max_tokens"})),
        event(
            "metadata",
            json!({"usage": {"inputTokens": 11, "outputTokens": 2, "totalTokens": 13}, "metrics": {"latencyMs": 5}}),
        ),
    ]
}

#[test]
fn chat_requests_become_converse_bodies() {
    let body = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "42"},
        ],
        "temperature": 0.5, "top_p": 0.9, "stop": "END",
        "tools": [{"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    });
    let out = chat_to_converse(&body, Some(64)).unwrap();
    assert_eq!(out["system"], json!([{"text": "Be brief."}]));
    assert_eq!(out["messages"][0], json!({"role": "user", "content": [{"text": "Hi"}, {"text": "there"}]}));
    assert_eq!(
        out["messages"][1]["content"][0]["toolUse"],
        json!({"toolUseId": "t1", "name": "get", "input": {"q": 1}})
    );
    assert_eq!(out["messages"][2]["content"][0]["toolResult"]["toolUseId"], "t1");
    assert_eq!(
        out["inferenceConfig"],
        json!({"maxTokens": 64, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]})
    );
    assert_eq!(out["toolConfig"]["tools"][0]["toolSpec"]["name"], "get");
    assert_eq!(out["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert!(out.get("model").is_none(), "the model is in the URL");

    let refused = [
        json!({"messages": [{"role": "system", "content": "only"}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        json!({"messages": [{"role": "user", "content": "x"}], "stop": 3}),
    ];
    for body in refused {
        assert!(matches!(chat_to_converse(&body, None), Err(GatewayError::InvalidRequest { .. })), "{body}");
    }
}

#[test]
fn converse_answers_become_chat_completions() {
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi "}, {"text": "there"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14, "cacheReadInputTokens": 2},
    });
    let chat = converse_to_chat(&answer, "anthropic.claude-3-5-sonnet-20240620-v1:0");
    assert_eq!(chat["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(chat["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        chat["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16, "prompt_tokens_details": {"cached_tokens": 2}})
    );

    let tool = json!({"output": {"message": {"content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}}]}}, "stopReason": "tool_use"});
    let chat = converse_to_chat(&tool, "m");
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        chat["choices"][0]["message"]["tool_calls"][0]["function"],
        json!({"name": "f", "arguments": "{\"a\":1}"})
    );
    assert!(chat.get("usage").is_none());
}

#[test]
fn errors_become_envelopes_of_their_class() {
    let read = |body: &str| error_to_openai(body.as_bytes())["error"].clone();
    assert_eq!(read(r#"{"message":"Too many requests, please wait before trying again."}"#)["type"], "api_error");
    assert_eq!(read(r#"{"message":"Input is too long for requested model."}"#)["code"], "context_length_exceeded");
    assert_eq!(
        read(r#"{"message":"The request signature we calculated does not match"}"#)["type"],
        "authentication_error"
    );
    assert_eq!(read("<html>oops</html>")["message"], "<html>oops</html>");
    assert_eq!(exception_envelope(Some("throttlingException"), "slow down")["error"]["code"], "rate_limit_exceeded");
}

#[test]
fn urls_encode_the_model_id_and_the_region_names_the_endpoint() {
    let target = Target {
        api_base: "https://bedrock-runtime.us-east-1.amazonaws.com",
        upstream_model: "anthropic.claude-3-5-sonnet-20240620-v1:0",
        api_version: None,
    };
    assert_eq!(
        Bedrock.url(target, Endpoint::ChatCompletions, true),
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    );
    assert_eq!(Bedrock.upstream_model("converse/meta.llama3-8b-instruct-v1:0"), "meta.llama3-8b-instruct-v1:0");
    assert_eq!(regional_endpoint("eu-west-3"), "https://bedrock-runtime.eu-west-3.amazonaws.com");
}

async fn translate(chunks: Vec<Vec<u8>>) -> (String, Option<StreamError>) {
    let raw = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, StreamError>(Bytes::from(c))));
    let mut stream = FrameStream::new(raw, ConverseToChatStream::new("m"));
    let mut out = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[tokio::test]
async fn streams_become_openai_chunks_with_usage_then_done() {
    let wire: Vec<u8> = answer_events().concat();
    // Split into reads of 7 bytes: messages span reads.
    let (out, error) = translate(wire.chunks(7).map(<[u8]>::to_vec).collect()).await;
    assert!(error.is_none());
    let events: Vec<&str> =
        out.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.trim_start_matches("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello world");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "length"));
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13})
    );
}

#[tokio::test]
async fn exceptions_bad_checksums_and_oversized_messages_end_the_stream() {
    let exception = encode(
        &[(":message-type", "exception"), (":exception-type", "throttlingException")],
        br#"{"message":"Too many tokens, please wait"}"#,
    );
    let (out, error) = translate(vec![answer_events()[0].clone(), exception]).await;
    assert!(error.is_none());
    assert!(out.contains(r#""code":"rate_limit_exceeded""#) && !out.contains("[DONE]"), "{out}");

    let mut bad = answer_events()[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let (out, _) = translate(vec![answer_events()[0].clone(), bad]).await;
    assert!(out.contains("malformed") && !out.contains("Hello"), "{out}");

    let mut huge = ((eventstream::MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes().to_vec();
    huge.extend(0u32.to_be_bytes());
    huge.extend(crc32fast::hash(&huge).to_be_bytes());
    let (_, error) = translate(vec![huge]).await;
    assert!(matches!(error, Some(StreamError::EventTooLarge(_))), "{error:?}");

    // A body cut after messageStop still ends the stream; one cut before it does not.
    let events = answer_events();
    let (out, _) = translate(events[..5].to_vec()).await;
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    let (out, _) = translate(events[..3].to_vec()).await;
    assert!(!out.contains("[DONE]"), "{out}");
}

fn router(yaml: &str) -> Result<crate::routing::router::Router, crate::config::ConfigError> {
    let config = crate::config::Config::parse(yaml, "test.yaml")?;
    crate::routing::router::Router::from_config(&config, "test.yaml")
}

/// LiteLLM's Bedrock keys: credentials (from the environment too), the region's endpoint, the
/// catalogue's price under the model id; a deployment without its region is refused by name.
#[test]
fn deployments_are_configured_as_litellm_configures_them() {
    std::env::set_var("TOLLGATE_TEST_BEDROCK_SECRET", "secret-from-env");
    let yaml = "\
model_list:
  - model_name: sonnet
    litellm_params:
      model: bedrock/converse/anthropic.claude-3-5-sonnet-20240620-v1:0
      aws_access_key_id: AKIDTEST
      aws_secret_access_key: os.environ/TOLLGATE_TEST_BEDROCK_SECRET
      aws_region_name: eu-west-3
";
    let r = router(yaml).unwrap_or_else(|e| panic!("{e}"));
    let (_, picked) = r.pick("sonnet", &[]).unwrap();
    let d = &picked.deployment;
    assert_eq!(d.provider, "bedrock");
    assert_eq!(d.upstream_model, "anthropic.claude-3-5-sonnet-20240620-v1:0");
    assert_eq!(
        d.urls.chat.as_ref().map(|u| u.as_str()),
        Some("https://bedrock-runtime.eu-west-3.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse")
    );
    let aws = d.aws.as_deref().unwrap();
    assert_eq!((aws.secret_access_key.expose(), aws.region.as_str()), ("secret-from-env", "eu-west-3"));
    assert!(d.price.is_some());
    assert_eq!(d.price, crate::limits::pricing::built_in("anthropic.claude-3-5-sonnet-20240620-v1:0"));
    assert!(!format!("{d:?}").contains("secret-from-env"), "the secret is never shown");

    let no_region = yaml.replace("      aws_region_name: eu-west-3\n", "      api_base: http://127.0.0.1:9\n");
    let error = router(&no_region).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("litellm_params.aws_region_name"), "{error}");
    let no_secret = yaml.replace("      aws_secret_access_key: os.environ/TOLLGATE_TEST_BEDROCK_SECRET\n", "");
    let error = router(&no_secret).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("aws_secret_access_key"), "{error}");
    let invoke = yaml.replace("bedrock/converse/", "bedrock/invoke/");
    let error = router(&invoke).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("litellm_params.model") && error.contains("InvokeModel"), "{error}");
}
