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
            let tokens = a.usage.map(|u| Tokens {
                prompt: u
                    .input_tokens
                    .saturating_add(u.cache_creation_input_tokens)
                    .saturating_add(u.cache_read_input_tokens),
                completion: u.output_tokens,
                cached: u.cache_read_input_tokens,
                cache_write: u.cache_creation_input_tokens,
                ..Tokens::default()
            });
            (tokens, a.model)
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
    fn missing_or_absurd_usage_is_none() {
        assert!(reported(Family::OpenAi, b"{}").0.is_none());
        assert!(reported(Family::Gemini, b"not json").0.is_none());
        let absurd = format!(r#"{{"usage":{{"input_tokens":{}}}}}"#, MAX_TOKENS_PER_REQUEST + 1);
        assert!(reported(Family::Anthropic, absurd.as_bytes()).0.is_none());
    }
}
