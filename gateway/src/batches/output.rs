//! A batch's output file, as the provider writes it (one line a request:
//! `{"custom_id", "response": {"status_code", "body"}, "error"}`), read for billing: the lines
//! answered 200 with a believable `usage`, each once. The file comes from outside: lines are
//! bounded, their number too, and whatever cannot be read is counted and never charged. Pure.

use super::jsonl::good_custom_id;
use crate::http::wire::Usage;
use crate::limits::pricing::Tokens;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;

/// The longest output line read: one whole answer of a chat completion or embedding.
pub const MAX_OUTPUT_LINE_BYTES: usize = 4 * 1024 * 1024;

/// A line to charge.
#[derive(Debug, PartialEq, Eq)]
pub struct Answered {
    pub custom_id: String,
    pub tokens: Tokens,
    /// The model the answer names, as the provider wrote it (bounded where it is recorded).
    pub served_model: Option<String>,
}

/// What an output file holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub answered: Vec<Answered>,
    /// Lines the provider answered with an error (not charged, as the provider does not).
    pub failed: usize,
    /// Lines that could not be read or were beyond a bound: too long, not the format, a
    /// `custom_id` seen already or out of bounds, usage beyond belief, past `max_lines`.
    pub unreadable: usize,
}

#[derive(Deserialize)]
struct Line<'a> {
    custom_id: String,
    #[serde(borrow)]
    response: Option<Response<'a>>,
}

#[derive(Deserialize)]
struct Response<'a> {
    status_code: u16,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Body {
    usage: Option<Usage>,
    model: Option<String>,
}

/// Reads `data`, at most `max_lines` lines that are not blank.
pub fn read(data: &[u8], max_lines: usize) -> Output {
    let mut out = Output::default();
    let mut seen = HashSet::new();
    let mut lines = 0usize;
    for raw in data.split(|&b| b == b'\n') {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        if lines > max_lines || raw.len() > MAX_OUTPUT_LINE_BYTES {
            out.unreadable += 1;
            continue;
        }
        let Ok(line) = serde_json::from_slice::<Line<'_>>(raw) else {
            out.unreadable += 1;
            continue;
        };
        if !good_custom_id(&line.custom_id) || !seen.insert(line.custom_id.clone()) {
            out.unreadable += 1;
            continue;
        }
        let body = match line.response {
            Some(Response { status_code: 200, body: Some(body) }) => body,
            _ => {
                out.failed += 1;
                continue;
            }
        };
        match serde_json::from_str::<Body>(body.get()) {
            Ok(Body { usage: Some(usage), model }) if usage.believable() => {
                out.answered.push(Answered { custom_id: line.custom_id, tokens: usage.tokens(), served_model: model });
            }
            Ok(Body { usage: None, .. }) => out.failed += 1,
            _ => out.unreadable += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(id: &str, prompt: u64, completion: u64) -> String {
        format!(
            r#"{{"id":"r","custom_id":"{id}","response":{{"status_code":200,"request_id":"q","body":{{"object":"chat.completion","model":"gpt-x-2025","usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}}},"error":null}}"#,
            prompt + completion
        )
    }

    #[test]
    fn answered_lines_are_read_with_their_usage_and_errors_are_not_charged() {
        let error = r#"{"id":"r","custom_id":"bad","response":null,"error":{"code":"x","message":"no"}}"#;
        let refused = r#"{"custom_id":"400","response":{"status_code":400,"body":{"error":{"message":"no"}}}}"#;
        let data = format!("{}\n{error}\n{refused}\n{}\n", answered("a", 10, 3), answered("b", 7, 0));
        let out = read(data.as_bytes(), 10);
        assert_eq!((out.failed, out.unreadable), (2, 0));
        assert_eq!(out.answered.len(), 2);
        assert_eq!(out.answered[0].custom_id, "a");
        assert_eq!((out.answered[0].tokens.prompt, out.answered[0].tokens.completion), (10, 3));
        assert_eq!(out.answered[1].served_model.as_deref(), Some("gpt-x-2025"));
    }

    #[test]
    fn hostile_lines_are_counted_and_never_charged() {
        let huge = u64::MAX / 2;
        let data = [
            answered("a", 1, 1),
            answered("a", 5, 5),         // a custom_id seen already
            answered("has space", 1, 1), // not a custom_id Tollgate writes
            answered("c", huge, 1),      // usage beyond belief
            "{not json".into(),
            r#"{"custom_id":"d","response":{"status_code":200,"body":[1]}}"#.into(),
            format!(r#"{{"custom_id":"e","pad":"{}"}}"#, "x".repeat(MAX_OUTPUT_LINE_BYTES)),
        ]
        .join("\n");
        let out = read(data.as_bytes(), 100);
        assert_eq!(out.answered.len(), 1);
        assert_eq!((out.answered[0].tokens.prompt, out.failed, out.unreadable), (1, 0, 6));
    }

    #[test]
    fn lines_past_the_bound_are_not_read() {
        let data = format!("{}\n{}\n{}", answered("a", 1, 1), answered("b", 1, 1), answered("c", 1, 1));
        let out = read(data.as_bytes(), 2);
        assert_eq!((out.answered.len(), out.unreadable), (2, 1));
    }
}
