//! The usage in a provider's own answer, read for metering: OpenAI's `usage`, Anthropic's
//! `usage` (its cache reads and writes are outside `input_tokens`) and Gemini's
//! `usageMetadata`. A count beyond `limits::MAX_TOKENS_PER_REQUEST` is not believed.

use super::Family;
use crate::limits::pricing::Tokens;
use serde::Deserialize;
use tollgate_schemas::limits::MAX_TOKENS_PER_REQUEST;

#[derive(Deserialize, Default)]
struct OpenAiAnswer {
    usage: Option<crate::http::wire::Usage>,
    model: Option<String>,
}

#[derive(Deserialize, Default)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
}

#[derive(Deserialize, Default)]
struct AnthropicAnswer {
    usage: Option<AnthropicUsage>,
    model: Option<String>,
}

impl AnthropicUsage {
    fn tokens(&self) -> Tokens {
        Tokens {
            prompt: self
                .input_tokens
                .saturating_add(self.cache_creation_input_tokens)
                .saturating_add(self.cache_read_input_tokens),
            completion: self.output_tokens,
            cached: self.cache_read_input_tokens,
            cache_write: self.cache_creation_input_tokens,
            ..Tokens::default()
        }
    }
}

/// One event of an Anthropic stream: `message_start` holds the prompt's usage,
/// `message_delta` the output tokens so far.
#[derive(Deserialize, Default)]
struct AnthropicEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<AnthropicAnswer>,
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GeminiAnswer {
    usage_metadata: Option<GeminiUsage>,
    model_version: Option<String>,
}

/// The tokens `body` reports and the model that served it; `None` for tokens when the answer
/// reports no usage, or none that is believable.
pub fn reported(family: Family, body: &[u8]) -> (Option<Tokens>, Option<String>) {
    let (tokens, model) = match family {
        Family::OpenAi => {
            let a: OpenAiAnswer = serde_json::from_slice(body).unwrap_or_default();
            (a.usage.map(|u| u.tokens()), a.model)
        }
        Family::Anthropic => {
            let a: AnthropicAnswer = serde_json::from_slice(body).unwrap_or_default();
            (a.usage.map(|u| u.tokens()), a.model)
        }
        Family::Gemini => {
            let a: GeminiAnswer = serde_json::from_slice(body).unwrap_or_default();
            let tokens = a.usage_metadata.map(|u| Tokens {
                prompt: u.prompt_token_count,
                completion: u.candidates_token_count.saturating_add(u.thoughts_token_count),
                reasoning: u.thoughts_token_count,
                cached: u.cached_content_token_count,
                ..Tokens::default()
            });
            (tokens, a.model_version)
        }
    };
    (tokens.filter(|t| t.largest() <= MAX_TOKENS_PER_REQUEST), model)
}

/// Folds the `data` of one server-sent event into the usage a stream reported so far: the
/// latest OpenAI `usage` or Gemini `usageMetadata` (each cumulative), Anthropic's prompt from
/// `message_start` and output from its last `message_delta`.
pub fn streamed(family: Family, data: &[u8], so_far: &mut Option<Tokens>) {
    if family != Family::Anthropic {
        if let (Some(tokens), _) = reported(family, data) {
            *so_far = Some(tokens);
        }
        return;
    }
    let event: AnthropicEvent = serde_json::from_slice(data).unwrap_or_default();
    if let Some(usage) = event.message.and_then(|m| m.usage) {
        *so_far = Some(usage.tokens());
    } else if let Some(usage) = event.usage.filter(|_| event.kind.as_deref() == Some("message_delta")) {
        let tokens = so_far.get_or_insert_with(Tokens::default);
        tokens.completion = usage.output_tokens.min(MAX_TOKENS_PER_REQUEST);
    }
}

/// An OpenAI chat or completions stream reports its usage only when asked: the body sent on
/// asks (`stream_options.include_usage`, spliced in as the model routes do,
/// `ProxyRequest::upstream_body`; every other byte kept), and `true` says the client did not,
/// so its usage chunk is kept from the client. A body the model routes would not parse is sent
/// on as it is.
pub fn ask_for_usage(family: Family, tail: &str, body: bytes::Bytes, stream: bool) -> (bytes::Bytes, bool) {
    use crate::providers::Endpoint;
    let endpoint = if tail.ends_with("/chat/completions") {
        Endpoint::ChatCompletions
    } else if tail.ends_with("/completions") {
        Endpoint::Completions
    } else {
        return (body, false);
    };
    if family != Family::OpenAi || !stream {
        return (body, false);
    }
    let Ok(request) = crate::http::wire::ProxyRequest::parse_bytes(body.clone(), endpoint) else {
        return (body, false);
    };
    if !request.injects_usage() || request.client_wants_usage {
        return (body, false);
    }
    match request.upstream_body(&request.model) {
        Ok(asked) => (bytes::Bytes::from(asked), true),
        Err(_) => (body, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_reports_its_own_shape() {
        let (t, m) = reported(Family::OpenAi, br#"{"model":"gpt","usage":{"prompt_tokens":3,"completion_tokens":5}}"#);
        assert_eq!((t.map(|t| (t.prompt, t.completion)), m.as_deref()), (Some((3, 5)), Some("gpt")));
        let body = br#"{"usage":{"input_tokens":3,"output_tokens":5,"cache_read_input_tokens":2}}"#;
        let t = reported(Family::Anthropic, body).0.map(|t| (t.prompt, t.completion, t.cached));
        assert_eq!(t, Some((5, 5, 2)));
        let body = br#"{"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":1}}"#;
        let t = reported(Family::Gemini, body).0.map(|t| (t.prompt, t.completion, t.reasoning));
        assert_eq!(t, Some((4, 7, 1)));
    }

    #[test]
    fn streams_fold_their_usage_events() {
        let mut so_far = None;
        streamed(
            Family::Anthropic,
            br#"{"type":"message_start","message":{"usage":{"input_tokens":4,"output_tokens":1}}}"#,
            &mut so_far,
        );
        streamed(Family::Anthropic, br#"{"type":"content_block_delta","delta":{"text":"hi"}}"#, &mut so_far);
        streamed(Family::Anthropic, br#"{"type":"message_delta","usage":{"output_tokens":9}}"#, &mut so_far);
        assert_eq!(so_far.map(|t| (t.prompt, t.completion)), Some((4, 9)));
        let mut so_far = None;
        streamed(Family::OpenAi, br#"{"choices":[]}"#, &mut so_far);
        assert!(so_far.is_none());
        streamed(Family::OpenAi, br#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#, &mut so_far);
        assert_eq!(so_far.map(|t| (t.prompt, t.completion)), Some((2, 3)));
        let mut so_far = None;
        for n in [1, 5] {
            let chunk = format!(r#"{{"usageMetadata":{{"promptTokenCount":2,"candidatesTokenCount":{n}}}}}"#);
            streamed(Family::Gemini, chunk.as_bytes(), &mut so_far);
        }
        assert_eq!(so_far.map(|t| (t.prompt, t.completion)), Some((2, 5)));
    }

    #[test]
    fn missing_or_absurd_usage_is_none() {
        assert!(reported(Family::OpenAi, b"{}").0.is_none());
        assert!(reported(Family::Gemini, b"not json").0.is_none());
        let absurd = format!(r#"{{"usage":{{"input_tokens":{}}}}}"#, MAX_TOKENS_PER_REQUEST + 1);
        assert!(reported(Family::Anthropic, absurd.as_bytes()).0.is_none());
    }
}
